"""The RabbitMQ transport's publisher for plain threads: ``delay()`` sends on the caller's
thread, over a pool of blocking ``pika`` connections (one per thread at a time), each with
publisher confirms, and returns once RabbitMQ confirmed the message.

Why not the event loop: a sync call handed to the transport's loop pays a thread hop and a
task per message, and the loop thread fights the callers for the GIL on every socket call;
one AMQP channel is also one process inside RabbitMQ. Threads publishing on connections of
their own wait on their own sockets, and the broker serves them in parallel (issue #18).

What is declared (a queue, its dead letters, the delay cascade, the directory entry) stays
the transport's: a queue this process has not declared yet is declared once on the
transport's loop, then written to from any thread. A batch of several messages goes through
the loop too, where its confirms are awaited together.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import ssl
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

try:
    import pika  # type: ignore[import-untyped]
    from pika import exceptions as px  # type: ignore[import-untyped]
except ImportError:  # installed with an older amqp extra: sync sends go through the loop
    HAVE_PIKA = False
else:
    HAVE_PIKA = True

from hubbub._redact import redact
from hubbub._text import cap
from hubbub.errors import TransportError, TransportUnavailable
from hubbub.transports._amqp_topology import (
    H_ATTEMPTS,
    H_QUEUE,
    MAX_PRIORITY,
    delay_route,
    delay_units,
    main_name,
    short_id,
)
from hubbub.transports._safe import MAX_HEADER, due_at
from hubbub.transports.base import Outgoing, SyncPublisher

if TYPE_CHECKING:
    from hubbub.transports.amqp import AMQPTransport

MAX_CONNECTIONS = 64  # threads past this many wait for a connection to come back
STALE = 1.0  # seconds idle after which a pooled connection is checked before use
_PERSISTENT = 2


def parameters(url: str, *, connect_timeout: float,
               publish_timeout: float) -> pika.ConnectionParameters:
    """pika's parameters for one broker URL of the transport (hubbub's options removed)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    tls = parts.scheme == "amqps"
    heartbeat = query.get("heartbeat")
    wait = max(0.5, min(connect_timeout, 5.0))
    return pika.ConnectionParameters(
        host=parts.hostname, port=parts.port or (5671 if tls else 5672),
        virtual_host=unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
        credentials=pika.PlainCredentials(unquote(parts.username or "guest"),
                                          unquote(parts.password or "guest")),
        ssl_options=pika.SSLOptions(ssl.create_default_context(), parts.hostname)
        if tls else None,
        heartbeat=None if heartbeat is None else int(float(heartbeat)),
        connection_attempts=1, socket_timeout=wait, stack_timeout=wait,
        blocked_connection_timeout=publish_timeout,
        client_properties={"connection_name": f"hubbub producer {os.getpid()}"})


class _Conn:
    """One blocking connection and its confirming channel; used by one thread at a time."""

    __slots__ = ("channel", "conn", "used_at", "where")

    def __init__(self, conn: pika.BlockingConnection, where: str) -> None:
        self.conn, self.where = conn, where
        try:
            self.channel = conn.channel()
            self.channel.confirm_delivery()
        except BaseException:
            self.close()
            raise
        self.used_at = time.monotonic()

    def alive(self) -> bool:
        """Open, as far as a look at its socket tells (the broker may have closed it while
        it sat in the pool: a restart, missed heartbeats)."""
        if time.monotonic() - self.used_at > STALE:
            try:
                self.conn.process_data_events(0)
            except (px.AMQPError, OSError):
                return False
        return bool(self.conn.is_open and self.channel.is_open)

    def abort(self, reason: str) -> None:
        """Close the socket now, without the closing handshake a silent broker never ends.

        pika has no public abort: its own ``_terminate_stream`` is what a lost heartbeat
        calls (pika 1.x)."""
        impl = self.conn._impl
        if not self.conn.is_closed and not impl.is_closing:
            impl._terminate_stream(px.StreamLostError(reason))

    def close(self) -> None:
        """Close politely within a second, else abort."""
        if self.conn.is_closed:
            return
        timer = self.conn._impl._adapter_call_later(1.0, lambda: self.abort("closing"))
        try:
            with contextlib.suppress(px.AMQPError, OSError):
                self.conn.close()
        finally:
            self.conn._impl._adapter_remove_timeout(timer)


class AMQPSyncPublisher(SyncPublisher):
    """The transport's ``publish`` from plain threads, one confirm per message.

    Args:
        transport: the connected transport whose queues and options it uses.
        loop: the loop the transport belongs to, for declarations and batches.
    """

    def __init__(self, transport: AMQPTransport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        link = transport._link
        self._urls = list(link.urls)
        self._params = [parameters(u, connect_timeout=transport.connect_timeout,
                                   publish_timeout=transport.publish_timeout)
                        for u in self._urls]
        self._next = 0
        self._idle: collections.deque[_Conn] = collections.deque()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._pid = os.getpid()
        self._closed = False

    def publish(self, items: Sequence[Outgoing]) -> None:
        transport = self._transport
        if len(items) != 1:  # a batch: its confirms awaited together, on the loop
            if items:
                self._on_loop(transport.publish(items))
            return
        [item] = items
        transport.check(items)
        if not transport._queues.ready(item.queue, item.eta is not None):
            self._on_loop(transport.prepare(item))
        now = transport.clock.time()
        at = due_at(item.eta, now)
        units = delay_units(at, now)
        headers: dict[str, Any] = {H_QUEUE: cap(item.queue, MAX_HEADER), H_ATTEMPTS: 0}
        if at is None or units <= 0:
            exchange, key = "", main_name(transport.prefix, item.queue)
        else:
            exchange, route = delay_route(transport.prefix, item.queue, units, at)
            headers.update(route)
            key = ""
        props = pika.BasicProperties(
            message_id=short_id(item.id), delivery_mode=_PERSISTENT,
            priority=min(max(item.priority, 0), MAX_PRIORITY), headers=headers)
        self._send(exchange, key, item.body, props)

    def _on_loop(self, coro: Any) -> None:
        """Run ``coro`` on the transport's loop and wait for it."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError("a sync hubbub call was made on the transport's own loop")
        asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _send(self, exchange: str, key: str, body: bytes, props: Any) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's sockets are not ours
            self._idle, self._pid = collections.deque(), os.getpid()
            self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        with self._slots:
            c = self._take()
            late = False

            def expire() -> None:
                nonlocal late
                late = True
                c.abort("no confirm in time")

            timer = c.conn._impl._adapter_call_later(self._transport.publish_timeout, expire)
            try:
                c.channel.basic_publish(exchange, key, body, props, mandatory=True)
            except BaseException as exc:
                self._drop(c)
                if late:
                    raise TransportUnavailable(
                        f"RabbitMQ at {c.where} did not confirm a publish within "
                        f"{self._transport.publish_timeout:g}s; is it reachable, and free of "
                        "memory or disk alarms?") from exc
                translated = self._translate(exc, c.where)
                if translated is exc:
                    raise
                raise translated from exc
            c.conn._impl._adapter_remove_timeout(timer)
            c.used_at = time.monotonic()
            if self._closed or self._pid != os.getpid():
                self._drop(c)
            else:
                self._idle.append(c)

    @staticmethod
    def _translate(exc: BaseException, where: str) -> BaseException:
        if isinstance(exc, px.UnroutableError):
            return TransportError(f"RabbitMQ at {where} returned a message as unroutable; was "
                                  "its queue deleted while this process ran?")
        if isinstance(exc, px.NackError):
            return TransportUnavailable(f"RabbitMQ at {where} refused (nack) a message; "
                                        "retrying on a new connection")
        if isinstance(exc, px.ChannelClosedByBroker):
            return TransportError(f"RabbitMQ at {where}: {redact(str(exc))}")
        if isinstance(exc, (px.AMQPError, OSError)):
            return TransportUnavailable(f"RabbitMQ at {where}: "
                                        f"{redact(str(exc)) or type(exc).__name__}")
        return exc

    def _take(self) -> _Conn:
        """A pooled connection that is still open, or a new one."""
        while True:
            try:
                c = self._idle.pop()
            except IndexError:
                return self._open()
            if c.alive():
                return c
            self._drop(c)

    def _open(self) -> _Conn:
        """A new connection, trying the URLs in turn with backoff for ``connect_timeout``."""
        deadline = time.monotonic() + self._transport.connect_timeout
        pause, failures = 0.05, []
        while True:
            index = self._next % len(self._urls)
            where = redact(self._urls[index])
            try:
                return _Conn(pika.BlockingConnection(self._params[index]), where)
            except (px.AMQPError, OSError) as exc:
                failures.append(f"{where}: {redact(str(exc)) or type(exc).__name__}")
                self._next += 1
            if self._next % len(self._urls) == 0:  # a full round failed: back off
                if time.monotonic() + pause > deadline:
                    raise TransportUnavailable(
                        f"RabbitMQ cannot be reached ({'; '.join(failures[-len(self._urls):])});"
                        " is it running and are the credentials right?")
                time.sleep(pause)  # backoff between rounds of connection attempts
                pause = min(pause * 2, 2.0)

    @staticmethod
    def _drop(c: _Conn) -> None:
        with contextlib.suppress(Exception):  # a connection being thrown away
            c.close()

    def close(self) -> None:
        """Close the pooled connections; those in use close when handed back."""
        self._closed = True
        if self._pid != os.getpid():
            return
        while self._idle:
            self._drop(self._idle.pop())
