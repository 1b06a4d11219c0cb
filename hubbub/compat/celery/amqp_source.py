"""The bridge on RabbitMQ: consume Celery's queues with manual acks after the result.

A message is taken with ``basic.get`` and acked only once its result is written (or it was
dead-lettered or handed back), so a bridge worker that dies leaves it unacked and RabbitMQ
gives it to the next consumer, marked redelivered; the bridge then counts that delivery in
an ``x-hubbub-attempts`` header of a copy (which Celery ignores), so poison is capped. The
lease is the connection's: renewing costs nothing, and a lost connection loses every lease at
once (``extend`` says so). A
message with a future eta waits in a delay queue (see ``_amqp``); a dead letter is copied,
with its reason in the ``x-hubbub-reason`` header, to ``<queue>.hubbub.dead`` before the
original is acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from hubbub._redact import redact
from hubbub._text import cap
from hubbub.errors import MessageError
from hubbub.transports._safe import count_of
from hubbub.transports.base import DeadLetterRequest, Delivery, Outgoing, QueueStats

from . import _amqp
from ._common import CelerySource, Receipt
from .protocol import CeleryRefused, build, due_at, read_amqp

if TYPE_CHECKING:
    from hubbub.hub import Hub
    from hubbub.message import Envelope

    from .results import CeleryResultWriter

POLL = (0.02, 0.25)  # seconds between two empty basic.gets: first, longest
ATTEMPTS = "x-hubbub-attempts"


class AmqpCelerySource(CelerySource):
    """Celery's queues on RabbitMQ.

    Args:
        hub: the app whose tasks run.
        url: Celery's broker URL (``amqp://user:pass@host:port/vhost``).
        queues: Celery queue names.
        results: where Celery callers read results, or None.
    """

    def __init__(self, hub: Hub, url: str, queues: tuple[str, ...],
                 results: CeleryResultWriter | None = None) -> None:
        super().__init__(hub, queues, results)
        self.url = url
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._gen = 0  # which channel a receipt's message came on

    def __repr__(self) -> str:
        return f"AmqpCelerySource({redact(self.url)}, {list(self.queues)})"

    async def connect(self) -> None:
        await self._open()
        if self.results is not None:
            await self.results.connect()

    async def _open(self) -> AbstractChannel:
        if self._channel is not None and not self._channel.is_closed:
            return self._channel
        if self._connection is not None:
            await self.close_connection()
        self._connection, self._channel = await _amqp.connect(self.url)
        self._gen += 1
        with _amqp.guard(self.url):
            for queue in self.queues:
                await _amqp.ensure_queue(self._connection, self._channel, queue)
        return self._channel

    async def close_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            # Already gone is fine: its deliveries are back in their queues.
            with contextlib.suppress(Exception):
                await connection.close()

    async def close(self) -> None:
        if self.results is not None:
            await self.results.close()
        await self.close_connection()

    def _live(self, d: Delivery) -> AbstractIncomingMessage | None:
        gen, message = d.receipt.handle
        if gen != self._gen or self._channel is None or self._channel.is_closed:
            return None  # its channel closed: RabbitMQ has it back already
        live: AbstractIncomingMessage = message
        return live

    # -- fetching ---------------------------------------------------------------------------

    async def fetch(self, queues: Sequence[str], *, limit: int, lease: float,
                    wait: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        until, pause = loop.time() + wait, POLL[0]
        while True:
            out: list[Delivery] = []
            with _amqp.guard(self.url):
                channel = await self._open()
                for name in queues:
                    queue = await channel.get_queue(name, ensure=False)
                    while len(out) < limit:
                        m = await queue.get(no_ack=False, fail=False)
                        if m is None:
                            break
                        got = await self._take(name, m, lease)
                        if got is not None:
                            out.append(got)
            remaining = until - loop.time()
            if out or remaining <= 0:
                return out
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, POLL[1])

    async def _take(self, queue: str, m: AbstractIncomingMessage,
                    lease: float) -> Delivery | None:
        assert self._channel is not None
        # Deliveries counted so far, in a header of the bridge's own (Celery ignores it): a
        # message whose holder died comes back redelivered, and is counted durably by
        # publishing it again with the count before it runs (the cap on poison).
        seen = count_of((m.headers or {}).get(ATTEMPTS, 0), 0)
        if m.redelivered:
            await self._again(queue, m, seen + 1)
            return None
        try:
            message: Any = read_amqp(m.body, m.headers, m.content_type, m.content_encoding,
                                     {"correlation_id": m.correlation_id,
                                      "reply_to": m.reply_to, "priority": m.priority},
                                     self.max_size)
        except CeleryRefused as exc:
            message = exc
        now = time.time()
        eta = None if isinstance(message, CeleryRefused) else due_at(message)
        if eta is not None and eta > now + 0.01:
            await _amqp.send_later(self._channel, queue, _amqp.copy_of(m), eta - now)
            await m.ack()
            return None
        ident = message.id if not isinstance(message, CeleryRefused) else message.task_id
        return Delivery(queue, m.body, ident or f"celery-amqp-{m.delivery_tag}", seen + 1,
                        min(max(m.priority or 0, 0), 9),
                        receipt=Receipt(self, (self._gen, m), message), lease_until=now + lease)

    async def _again(self, queue: str, m: AbstractIncomingMessage, attempts: int) -> None:
        """Put a copy of ``m`` at the end of ``queue`` with ``attempts`` counted, then ack."""
        assert self._channel is not None
        await self._channel.default_exchange.publish(
            _amqp.copy_of(m, {ATTEMPTS: attempts}), routing_key=queue)
        await m.ack()

    # -- settling ---------------------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self.tell_expired(deliveries)
        with _amqp.guard(self.url):
            for d in deliveries:
                m = self._live(d)
                if m is not None:
                    await m.ack()

    async def release(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        with _amqp.guard(self.url):
            for d in deliveries:
                m = self._live(d)
                if m is None:
                    continue
                if delay > 0 and self._channel is not None:
                    await _amqp.send_later(self._channel, d.queue,
                                           _amqp.copy_of(m, {ATTEMPTS: d.attempts - 1}), delay)
                    await m.ack()
                else:  # not nack: a redelivered flag would count it as an attempt
                    await self._again(d.queue, m, d.attempts - 1)

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        until, lost = time.time() + lease, []
        for d in deliveries:
            if self._live(d) is None:
                lost.append(d)
            else:
                d.lease_until = until
        return lost

    async def dead_letter(self, requests: Sequence[DeadLetterRequest]) -> None:
        with _amqp.guard(self.url):
            channel = await self._open()
            for r in requests:
                m = self._live(r.delivery)
                if m is None:
                    continue  # back in its queue already; it is refused again next time
                name = _amqp.dead_queue(r.delivery.queue)
                await channel.declare_queue(name, durable=True)
                await channel.default_exchange.publish(_amqp.copy_of(m, {
                    "x-hubbub-reason": cap(r.reason, 1000),
                    "x-hubbub-died-at": time.time()}), routing_key=name)
                await m.ack()
        await self.tell_celery(requests)

    async def publish(self, items: Sequence[Outgoing]) -> None:
        now = time.time()
        with _amqp.guard(self.url):
            channel = await self._open()
            for item in items:
                try:
                    message = _amqp.message_of(self.retried(item))
                except MessageError as exc:
                    raise MessageError(f"retry of {item.id} cannot go back to Celery's "
                                       f"queue {item.queue!r}: {exc}") from exc
                if item.eta is not None and item.eta > now:
                    await _amqp.send_later(channel, item.queue, message, item.eta - now)
                else:
                    await channel.default_exchange.publish(message, routing_key=item.queue)

    async def send(self, env: Envelope) -> None:
        message = _amqp.message_of(build(env))
        with _amqp.guard(self.url):
            channel = await self._open()
            assert self._connection is not None
            if env.queue not in self.queues:
                await _amqp.ensure_queue(self._connection, channel, env.queue)
            await channel.default_exchange.publish(message, routing_key=env.queue)

    async def stats(self, queues: Sequence[str]) -> list[QueueStats]:
        out = []
        with _amqp.guard(self.url):
            channel = await self._open()
            for name in queues:
                declared = await channel.declare_queue(name, passive=True)
                ready = declared.declaration_result.message_count or 0
                dead = await channel.declare_queue(_amqp.dead_queue(name), durable=True)
                out.append(QueueStats(name, ready=ready,
                                      dead=dead.declaration_result.message_count or 0))
        return out
