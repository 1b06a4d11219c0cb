"""The RabbitMQ transport's publisher for plain threads: ``delay()`` sends on the caller's
thread, over a pool of blocking connections of ``amqp`` (py-amqp, Celery's client; one per
thread at a time), each with publisher confirms, and returns once RabbitMQ confirmed the
message.

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
import errno
import os
import queue
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

try:
    import amqp  # type: ignore[import-untyped]
except ImportError:  # installed with an older amqp extra: sync sends go through the loop
    HAVE_CLIENT = False
else:
    HAVE_CLIENT = True

from hubbub._redact import redact
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
from hubbub.transports._safe import due_at
from hubbub.transports.base import Outgoing, SyncPublisher

if TYPE_CHECKING:
    from hubbub.transports.amqp import AMQPTransport

MAX_CONNECTIONS = 64  # threads past this many wait for a connection to come back
STALE = 1.0  # seconds idle after which a pooled connection is looked at before use
# Seconds idle after which a pooled connection is not trusted at all: with no heartbeats, a
# connection a firewall or NAT dropped in silence would look open until a publish timed out.
RETIRE = 30.0
NO_ROUTE = 312  # the reply code of a mandatory message that no queue took
_PERSISTENT = 2
# Not "connection.blocked": py-amqp reads the socket before every publish for its notice (two
# mode switches and a recv). A blocked connection shows as a confirm that does not come in
# publish_timeout, and the error names memory and disk alarms.
_CAPABILITIES = {"consumer_cancel_notify": True, "authentication_failure_close": True,
                 "connection.blocked": False}
# What the client raises when the connection or the socket fails.
_LOST = (OSError, EOFError)
# The async driver's TLS options: a URL with them keeps sync sends on the loop (``direct``).
_TLS_OPTIONS = ("cafile", "capath", "cadata", "certfile", "keyfile", "no_verify_ssl")


def direct(url: str) -> bool:
    """Whether this publisher can connect as the async driver does: not with TLS options
    in the URL (client certificates, own CAs), which stay with the loop's connection."""
    parts = urlsplit(url)
    return parts.scheme == "amqp" or not any(
        k in _TLS_OPTIONS for k, _ in parse_qsl(parts.query, keep_blank_values=True))


def options(url: str, *, connect_timeout: float, publish_timeout: float) -> dict[str, Any]:
    """``amqp.Connection``'s keywords for one broker URL of the transport (hubbub's options
    removed; others, such as ``heartbeat``, are the async driver's and ignored here)."""
    parts = urlsplit(url)
    tls = parts.scheme == "amqps"
    return {
        "host": f"{parts.hostname}:{parts.port or (5671 if tls else 5672)}",
        "userid": unquote(parts.username or "guest"),
        "password": unquote(parts.password or "guest"),
        "virtual_host": unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
        # A default context (certificates and host name verified), as aiormq's.
        "ssl": {"context": {"check_hostname": True}, "server_hostname": parts.hostname}
        if tls else False,
        "connect_timeout": max(0.5, min(connect_timeout, 5.0)),
        # The kernel's timeouts (SO_RCVTIMEO, SO_SNDTIMEO) on a blocking socket bound a
        # publish and its confirm: a Python-level timeout would poll before every recv and
        # switch the socket's mode (a syscall, and a GIL hand-over, each) twice per wait.
        "read_timeout": publish_timeout,
        "write_timeout": publish_timeout,
        # No heartbeats: nothing answers them while a connection sits in the pool; one the
        # broker closed meanwhile is found when it is next taken, and one idle for long is
        # replaced (``alive``).
        "heartbeat": 0,
        "confirm_publish": True,
        "client_properties": {"connection_name": f"hubbub producer {os.getpid()}"},
    }


def _slots() -> queue.SimpleQueue[None]:
    """MAX_CONNECTIONS tokens: a semaphore whose get and put are C calls (a
    threading.Semaphore costs two Python-level lock round trips per publish)."""
    tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
    for _ in range(MAX_CONNECTIONS):
        tokens.put(None)
    return tokens


class _Conn:
    """One blocking connection and its confirming channel; used by one thread at a time."""

    __slots__ = ("channel", "conn", "used_at", "where")

    def __init__(self, conn: Any, where: str) -> None:
        self.conn, self.where = conn, where
        conn.negotiate_capabilities = _CAPABILITIES
        try:
            conn.connect()
            self.channel = conn.channel()
        except BaseException:
            self.abort()
            raise
        self.used_at = time.monotonic()

    def alive(self) -> bool:
        """Open, as far as a look at its socket tells (the broker may have closed it while
        it sat in the pool: a restart, an operator), and not idle long enough to have been
        dropped in silence."""
        idle = time.monotonic() - self.used_at
        if idle > RETIRE:
            return False
        if idle > STALE:
            try:
                self.conn.drain_events(timeout=0)
            except TimeoutError:
                pass  # nothing to read: open
            except (amqp.exceptions.AMQPError, *_LOST):
                return False
        return bool(self.conn.connected and self.channel.is_open)

    def abort(self) -> None:
        """Close the socket now, without the closing handshake a silent broker never ends."""
        with contextlib.suppress(Exception):
            self.conn.collect()

    def close(self, within: float = 1.0) -> None:
        """Close politely within ``within`` seconds, else abort."""
        if within <= 0:
            self.abort()
            return
        try:
            with self.conn.transport.having_timeout(within):
                self.conn.close()
        except Exception:  # a connection being thrown away
            self.abort()


class AMQPSyncPublisher(SyncPublisher):
    """The transport's ``publish`` from plain threads, one confirm per message.

    Args:
        transport: the connected transport whose queues and options it uses.
        loop: the loop the transport belongs to, for declarations and batches.
    """

    def __init__(self, transport: AMQPTransport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._urls = list(transport._link.urls)
        self._options = [options(u, connect_timeout=transport.connect_timeout,
                                 publish_timeout=transport.publish_timeout) for u in self._urls]
        self._next = 0
        self._names: dict[str, str] = {}  # queue -> its AMQP queue, for names checked
        self._idle: collections.deque[_Conn] = collections.deque()
        self._slots = _slots()
        self._pid = os.getpid()
        self._closed = False

    def publish(self, items: Sequence[Outgoing]) -> None:
        transport = self._transport
        if len(items) != 1:  # a batch: its confirms awaited together, on the loop
            if items:
                self._on_loop(transport.publish(items))
            return
        [item] = items
        queue = item.queue
        key = self._names.get(queue) if type(queue) is str else None
        if key is None or (transport.quorum and item.priority > 0):
            transport.check(items)  # the name depends on nothing else: checked once
            key = self._names[queue] = main_name(transport.prefix, queue)
        if not transport._queues.ready(queue, item.eta is not None):
            self._on_loop(transport.prepare(item))
        headers: dict[str, Any] = {H_QUEUE: queue, H_ATTEMPTS: 0}  # as build_message
        exchange = ""
        if item.eta is not None:
            now = transport.clock.time()
            at = due_at(item.eta, now)
            units = delay_units(at, now)
            if at is not None and units > 0:
                exchange, route = delay_route(transport.prefix, queue, units, at)
                headers.update(route)
                key = ""
        message = amqp.Message(item.body, delivery_mode=_PERSISTENT, message_id=short_id(item.id),
                               priority=min(max(item.priority, 0), MAX_PRIORITY),
                               application_headers=headers)
        self._send(exchange, key, message)

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

    def _send(self, exchange: str, key: str, message: Any) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's sockets are not ours
            self._idle, self._pid, self._slots = collections.deque(), os.getpid(), _slots()
        timeout = self._transport.publish_timeout
        self._slots.get()  # blocks while MAX_CONNECTIONS threads are publishing
        try:
            c = self._take()
            try:
                c.channel.basic_publish(message, exchange, key, mandatory=True)
            except BaseException as exc:
                # Whatever failed, the channel may still owe a confirm: never reuse it.
                c.abort()
                translated = self._translate(exc, c.where, timeout)
                if translated is exc:
                    raise
                raise translated from exc
            c.used_at = time.monotonic()
            if self._closed or self._pid != os.getpid():
                c.close()
            else:
                self._idle.append(c)
        finally:
            self._slots.put(None)

    @staticmethod
    def _translate(exc: BaseException, where: str, timeout: float) -> BaseException:
        errors = amqp.exceptions
        if isinstance(exc, TimeoutError) or (  # the confirm's wait; the write's
                isinstance(exc, OSError) and exc.errno == errno.EAGAIN):
            return TransportUnavailable(
                f"RabbitMQ at {where} did not confirm a publish within {timeout:g}s; is it "
                "reachable, and free of memory or disk alarms?")
        if isinstance(exc, errors.ChannelError) and exc.reply_code == NO_ROUTE:
            return TransportError(f"RabbitMQ at {where} returned a message as unroutable; was "
                                  "its queue deleted while this process ran?")
        if isinstance(exc, errors.MessageNacked):
            return TransportUnavailable(f"RabbitMQ at {where} refused (nack) a message; "
                                        "retrying on a new connection")
        if isinstance(exc, errors.ChannelError):
            return TransportError(f"RabbitMQ at {where}: {redact(str(exc))}")
        if isinstance(exc, (errors.AMQPError, *_LOST)):
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
            c.close(0.2)  # politely if it answers at once (a retired one), else aborted

    def _open(self) -> _Conn:
        """A new connection, trying the URLs in turn with backoff for ``connect_timeout``."""
        deadline = time.monotonic() + self._transport.connect_timeout
        pause, failures = 0.05, []
        while True:
            index = self._next % len(self._urls)
            where = redact(self._urls[index])
            try:
                return _Conn(amqp.Connection(**self._options[index]), where)
            except (amqp.exceptions.AMQPError, *_LOST) as exc:
                failures.append(f"{where}: {redact(str(exc)) or type(exc).__name__}")
                self._next += 1
            if self._next % len(self._urls) == 0:  # a full round failed: back off
                if time.monotonic() + pause > deadline:
                    raise TransportUnavailable(
                        f"RabbitMQ cannot be reached ({'; '.join(failures[-len(self._urls):])});"
                        " is it running and are the credentials right?")
                time.sleep(pause)  # backoff between rounds of connection attempts
                pause = min(pause * 2, 2.0)

    def close(self) -> None:
        """Close the pooled connections; those in use close when handed back."""
        self._closed = True
        if self._pid != os.getpid():
            return
        deadline = time.monotonic() + 1.0  # a silent broker: one second for them all
        while self._idle:
            self._idle.pop().close(deadline - time.monotonic())
