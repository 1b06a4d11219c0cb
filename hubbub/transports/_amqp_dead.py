"""The RabbitMQ transport's dead-letter queues: one per queue, declared with the retention
(``x-message-ttl``) and the cap (``x-max-length``, drop-head), read and emptied in place.

hubbub up to 0.2 kept dead letters in a queue declared without arguments
(``legacy_dead_name``); RabbitMQ refuses to declare it again with them, so today's queue has
another name. The legacy queue is read with it, and emptied into it when the queue is next
declared: each message keeps the rest of its retention, not a fresh one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, DeliveryMode
from aio_pika.exceptions import ChannelPreconditionFailed

from hubbub.clock import Clock
from hubbub.transports._amqp_link import UNAVAILABLE, Link, confirm
from hubbub.transports._amqp_topology import (
    H_DIED,
    dead_arguments,
    dead_letter_of,
    dead_name,
    legacy_dead_name,
    quorum,
    ready_counts,
    seconds,
)
from hubbub.transports._dead import Retention
from hubbub.transports._dead import dropped as log_dropped
from hubbub.transports.base import DeadLetter

log = logging.getLogger("hubbub.transports")

# (queue, dead message) -> whether to take it; and what to do before it is acked
Chosen = Callable[[str, AbstractIncomingMessage], bool]
Before = Callable[[str, AbstractIncomingMessage], Awaitable[None]]


class DeadQueues:
    """The dead-letter queues of the queues under ``prefix``.

    Args:
        link: the transport's connection.
        prefix: the namespace of every queue.
        retention: how long and how many dead letters are kept.
        clock: the source of wall time.
    """

    def __init__(self, link: Link, prefix: str, retention: Retention, clock: Clock, *,
                 queue_type: str = "classic") -> None:
        self._link, self._prefix, self._type = link, prefix, queue_type
        self._retention, self._clock = retention, clock
        self._warned: set[str] = set()  # dead-letter queues found with other arguments

    def name(self, queue: str) -> str:
        """The queue that takes ``queue``'s dead letters."""
        return dead_name(self._prefix, queue)

    def names(self, queue: str) -> list[str]:
        """Where ``queue``'s dead letters may be: the queue of today, then the legacy one."""
        return [dead_name(self._prefix, queue), legacy_dead_name(self._prefix, queue)]

    async def declare(self, conn: AbstractConnection, queue: str) -> None:
        """Declare ``queue``'s dead-letter queue with the retention and cap, and move into it
        what the legacy queue (hubbub up to 0.2, no arguments) still holds.

        Declared on a channel of its own: an existing queue with other arguments (another
        process set other limits) closes the channel, and is then used as it is, with a
        warning, rather than failing every dead letter.
        """
        name = self.name(queue)
        channel = await conn.channel(publisher_confirms=False)
        try:
            await channel.declare_queue(name, durable=True, arguments={**dead_arguments(
                self._retention.ttl, self._retention.limit), **quorum(self._type)})
        except ChannelPreconditionFailed:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("RabbitMQ queue %r exists with other dead-letter limits than"
                            " dead_ttl=%g, dead_max=%d; it keeps its own (delete it to"
                            " change them)", name, self._retention.ttl, self._retention.limit)
        finally:
            if not channel.is_closed:
                await channel.close()
        legacy = legacy_dead_name(self._prefix, queue)
        [count] = await ready_counts(conn, [legacy])
        if count is None:
            return
        _, pub, _ = await self._link.ensure()
        now, expired = self._clock.time(), 0
        async with self._link.browse(legacy) as messages:
            for m in messages:
                left = (seconds((m.headers or {}).get(H_DIED)) or now) + self._retention.ttl - now
                if left > 0:  # keeps the rest of its retention, not a fresh one
                    confirm(await pub.default_exchange.publish(aio_pika.Message(
                        m.body, message_id=m.message_id, priority=m.priority,
                        delivery_mode=DeliveryMode.PERSISTENT, headers=dict(m.headers or {}),
                        expiration=left), routing_key=name))
                else:
                    expired += 1
                await m.ack()
        log_dropped(queue, expired, f"older than the retention of {self._retention.ttl:g}s")
        with contextlib.suppress(*UNAVAILABLE):
            channel = await conn.channel(publisher_confirms=False)
            try:
                await channel.queue_delete(legacy, if_empty=True)
            finally:
                if not channel.is_closed:
                    await channel.close()

    async def read(self, queues: Sequence[str], *, limit: int,
                   cutoff: float) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``queues`` that died at ``cutoff`` or later
        (the broker drops one past its retention only when it reaches the head)."""
        out: list[DeadLetter] = []
        for queue in queues:
            for dead in self.names(queue):
                async with self._link.browse(dead) as messages:
                    letters = [dead_letter_of(queue, m) for m in messages]
                    out += [d for d in letters if d.died_at >= cutoff][:limit]
        return sorted(out, key=lambda d: d.died_at)[:limit]

    async def take(self, queues: Sequence[str], chosen: Chosen,
                   before: Before | None = None) -> int:
        """Remove (ack) the dead letters of ``queues`` that are ``chosen``, each once
        ``before`` (if given) is done with it; how many. The rest stay in place."""
        count = 0
        with self._link.guard():
            for queue in queues:
                for dead in self.names(queue):
                    async with self._link.browse(dead) as messages:
                        for m in messages:
                            if chosen(queue, m):
                                if before is not None:
                                    await before(queue, m)
                                await m.ack()
                                count += 1
        return count
