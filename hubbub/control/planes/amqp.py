"""The plane on RabbitMQ: a fanout exchange per channel, ``<prefix>:plane:<channel>``.

Publishing sends a batch to the exchange with publisher confirms, awaited together (one
round trip). Each subscription is an exclusive, auto-delete, server-named queue bound to the
exchange and capped with ``x-max-length`` (RabbitMQ drops the oldest), consumed without
acks into a local buffer of the same bound. A message published while nobody is bound is
routed nowhere and costs nothing. The exchanges are not durable: the plane is for watching
and steering, and a restarted broker starts with none (the first publish declares them).

A lost connection is opened again (the URL list of a cluster in turn, as the broker does);
the subscriptions declare new queues on their next read and miss what was published while
they had none.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue, ExchangeType

from hubbub._redact import redact
from hubbub.control.plane import MAXLEN, Plane, Subscription
from hubbub.errors import ConfigurationError
from hubbub.transports._amqp_link import UNAVAILABLE, Link
from hubbub.transports._amqp_topology import check_prefix, parse_urls
from hubbub.transports._dead import retention_of

__all__ = ["AMQPPlane"]


class AMQPPlane(Plane):
    """Channels as fanout exchanges; each subscription a capped queue of its own.

    Args:
        url: the broker's ``amqp://`` URL or ``;``-separated URL list, with its options
            (``prefix``, ``connect_timeout``, ``publish_timeout``).
        maxlen: messages a lagging subscription keeps.

    Raises:
        ConfigurationError: the URL or an option is malformed.
    """

    def __init__(self, url: str, maxlen: int = MAXLEN) -> None:
        super().__init__(maxlen)
        url, _ = retention_of(url, None, None)  # the broker's dead-letter options: not ours
        urls, options = parse_urls(url)
        self.url = redact(url)
        self.prefix = check_prefix(options.get("prefix", "hubbub"))
        try:
            connect_timeout = float(options.get("connect_timeout", "10"))
            publish_timeout = float(options.get("publish_timeout", "30"))
        except ValueError as exc:
            raise ConfigurationError(f"bad option in AMQP URL {self.url!r}: {exc}") from exc
        self.link = Link(urls, connect_timeout=connect_timeout, publish_timeout=publish_timeout,
                         on_connect=self._forget, on_channel=lambda: None)
        self._exchanges: dict[str, AbstractExchange] = {}  # declared on this connection

    def __repr__(self) -> str:
        return f"AMQPPlane({self.url!r})"

    def exchange_name(self, channel: str) -> str:
        return f"{self.prefix}:plane:{channel}"

    def _forget(self) -> None:
        self._exchanges.clear()  # a new connection: declare again

    async def connect(self) -> None:
        with self.link.guard():
            await self.link.ensure()

    async def close(self) -> None:
        await self.link.drop()

    async def exchange(self, channel: str) -> AbstractExchange:
        """``channel``'s exchange, declared (on the publishing channel) once per connection."""
        _, pub, _ = await self.link.ensure()
        exchange = self._exchanges.get(channel)
        if exchange is None:
            exchange = await pub.declare_exchange(self.exchange_name(channel),
                                                  ExchangeType.FANOUT, durable=False)
            self._exchanges[channel] = exchange
        return exchange

    async def publish(self, channel: str, messages: Sequence[bytes]) -> None:
        if not messages:
            return
        with self.link.guard():
            async with self.link.bounded("plane message"):
                exchange = await self.exchange(channel)
                await asyncio.gather(*(
                    exchange.publish(aio_pika.Message(bytes(m)), routing_key="",
                                     mandatory=False)
                    for m in messages))

    async def subscribe(self, channel: str) -> Subscription:
        subscription = _AMQPSubscription(self, channel)
        with self.link.guard():
            await subscription.open()
        return subscription


class _AMQPSubscription(Subscription):
    def __init__(self, plane: AMQPPlane, channel: str) -> None:
        self._plane = plane
        self._channel = channel
        self._buffer: deque[bytes] = deque(maxlen=plane.maxlen)
        self._arrived = asyncio.Event()
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._gen = -1  # the consuming channel the queue was declared on
        self._closed = False

    async def open(self) -> None:
        """Declare this reader's queue on the current consuming channel and consume it."""
        plane = self._plane
        await plane.exchange(self._channel)  # exists before the bind
        _, _, sub = await plane.link.ensure()
        queue = await sub.declare_queue(
            None, exclusive=True, auto_delete=True,
            arguments={"x-max-length": plane.maxlen, "x-overflow": "drop-head"})
        await queue.bind(plane.exchange_name(self._channel))
        self._tag = await queue.consume(self._on_message, no_ack=True)
        self._queue, self._gen = queue, plane.link.gen

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._buffer.append(message.body)
        self._arrived.set()

    async def read(self, wait: float) -> list[bytes]:
        if self._closed:
            raise RuntimeError("read from a closed subscription")
        link = self._plane.link
        if not self._buffer and (self._gen != link.gen or not link.consuming()
                                 or not link.alive()):
            with link.guard():
                await self.open()  # the connection was lost: a new queue, from now on
        if not self._buffer and wait > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), wait)
        out = list(self._buffer)
        self._buffer.clear()
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        queue, tag, self._queue = self._queue, self._tag, None
        if queue is not None and tag is not None and self._gen == self._plane.link.gen:
            with contextlib.suppress(*UNAVAILABLE):
                await queue.cancel(tag)  # auto-delete: the queue goes with its consumer
