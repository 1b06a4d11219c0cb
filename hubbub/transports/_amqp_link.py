"""The RabbitMQ transport's connection: failover over a list of URLs with backoff, its two
channels, and the translation of driver errors at the transport's boundary.

One connection carries a publishing channel (with publisher confirms) and a consuming
channel; the broker gives a consuming channel's unacked deliveries back when it closes, so
the transport's leases belong to it. ``Link`` calls ``on_connect`` after it opened a new
connection (what was declared on the old one must be declared again) and ``on_channel``
after it opened a new consuming channel (what the old one held is back in its queues).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
)
from pamqp.commands import Basic

from hubbub._redact import redact
from hubbub.errors import HubbubError, TransportError, TransportUnavailable
from hubbub.transports._amqp_failover import Failover
from hubbub.transports._amqp_topology import browse, ready_counts
from hubbub.transports._timeouts import bounded

UNAVAILABLE = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, TimeoutError)


def confirm(result: Any) -> Any:
    """``result`` of a publish, if the broker confirmed it.

    Raises:
        TransportError: the broker returned or refused the message.
    """
    if not isinstance(result, Basic.Ack):
        raise TransportError(f"RabbitMQ did not confirm a message ({type(result).__name__})")
    return result


class Link:
    """The connection to one of ``urls`` and its channels, opened again when lost.

    Args:
        urls: the brokers of a cluster, tried in turn.
        connect_timeout: seconds to keep trying the URLs.
        publish_timeout: seconds a write that waits for the broker may take.
        on_connect: called after a new connection and publishing channel opened.
        on_channel: called after a new consuming channel opened (its prefetch is 1).
    """

    def __init__(self, urls: Sequence[str], *, connect_timeout: float, publish_timeout: float,
                 on_connect: Callable[[], None], on_channel: Callable[[], None],
                 global_qos: bool = True) -> None:
        self.urls = list(urls)
        # Quorum queues refuse a channel-wide prefetch: theirs is per consumer (per queue).
        self.global_qos = global_qos
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self._on_connect, self._on_channel = on_connect, on_channel
        self.conn: AbstractConnection | None = None
        self.pub: AbstractChannel | None = None  # publishes and declares, with confirms
        self.sub: AbstractChannel | None = None  # consumes and acks; its loss ends leases
        self.gen = 0  # bumps with every new consuming channel
        self._failover = Failover(self.urls)  # the URL to try first, kept across reconnects
        self.where = redact(self.urls[0])
        self._lock = asyncio.Lock()
        self._broken = False  # the broker nacked: reconnect before the next write

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Translate driver errors at the boundary, passwords masked."""
        try:
            yield
        except HubbubError:
            raise
        except ChannelPreconditionFailed as exc:
            raise TransportError(
                f"RabbitMQ at {self.where} refused a declaration ({redact(str(exc))}); a queue"
                " with other arguments exists: delete it or use another prefix"
            ) from exc
        except DeliveryError as exc:
            if not isinstance(exc.frame, Basic.Nack):
                raise TransportError(f"RabbitMQ at {self.where}: {redact(str(exc))}") from exc
            # A nack is the broker failing inside (a quorum queue that lost its leader while
            # this channel was sending to it, and keeps nacking on it): the retry opens a new
            # connection, at the URL that worked last (``Failover``), with new channels.
            self._broken = True
            raise TransportUnavailable(
                f"RabbitMQ at {self.where} refused (nack) a message; retrying on a new "
                "connection") from exc
        except ChannelNotFoundEntity as exc:
            raise TransportError(f"RabbitMQ at {self.where}: {redact(str(exc))}") from exc
        except UNAVAILABLE as exc:
            raise TransportUnavailable(
                f"RabbitMQ at {self.where}: {redact(str(exc)) or type(exc).__name__}"
            ) from exc

    def bounded(self, what: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Bound a write that waits for the broker (confirms, a reconnect) by
        ``publish_timeout``: a blocked or silent broker must not hang the caller. What timed
        out may still arrive (a message is confirmed later, or never)."""
        return bounded(self.publish_timeout, lambda: (
            f"RabbitMQ at {self.where} did not confirm a {what} within"
            f" {self.publish_timeout:g}s; is it reachable, and free of memory or disk alarms?"))

    def alive(self) -> bool:
        return not (self._broken or self.conn is None or self.conn.is_closed
                    or self.pub is None or self.pub.is_closed)

    def consuming(self) -> bool:
        """Whether the consuming channel is open."""
        return self.sub is not None and not self.sub.is_closed

    async def ensure(self) -> tuple[AbstractConnection, AbstractChannel, AbstractChannel]:
        """The connection and both channels, reconnecting (next URL, backoff) if needed."""
        if not self.alive() or not self.consuming():
            async with self._lock:
                if not self.alive():
                    await self._reconnect()
                assert self.conn is not None
                if not self.consuming():
                    self.gen += 1  # deliveries of the old channel are back in their queues
                    self.sub = await self.conn.channel(publisher_confirms=False)
                    await self.sub.set_qos(prefetch_count=1,  # before consuming
                                           global_=self.global_qos)
                    self._on_channel()
        assert self.conn is not None
        assert self.pub is not None
        assert self.sub is not None
        return self.conn, self.pub, self.sub

    async def _reconnect(self) -> None:
        await self.drop()
        loop = asyncio.get_running_loop()
        attempt = self._failover.attempt(loop.time() + self.connect_timeout)
        while True:
            self.where = attempt.where
            try:
                budget = max(0.5, attempt.deadline - loop.time())
                conn = await aio_pika.connect(attempt.url, timeout=min(budget, 5.0))
                break
            except UNAVAILABLE as exc:
                attempt.failed(exc)
            pause = attempt.backoff(loop.time())  # raises once the deadline has passed
            if pause:
                await asyncio.sleep(pause)
        self.conn = conn
        self.pub = await conn.channel(publisher_confirms=True, on_return_raises=True)
        self._on_connect()

    async def drop(self) -> None:
        """Close the connection (and with it both channels), if open."""
        conn, self.conn, self.pub, self.sub = self.conn, None, None, None
        self._broken = False
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(*UNAVAILABLE):
                await conn.close()

    @contextlib.asynccontextmanager
    async def browse(self, name: str) -> AsyncIterator[list[AbstractIncomingMessage]]:
        """Every message of queue ``name``, unacked, on a channel of its own (``browse``)."""
        conn, _, _ = await self.ensure()
        async with browse(conn, name) as messages:
            yield messages

    async def counts(self, names: Sequence[str]) -> list[int | None]:
        """Ready messages in each queue; None where it does not exist."""
        conn, _, _ = await self.ensure()
        return await ready_counts(conn, names)
