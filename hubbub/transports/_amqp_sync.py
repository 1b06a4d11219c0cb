"""The RabbitMQ transport's publisher for plain threads: ``delay()`` sends from the caller's
thread over one blocking connection of ``amqp`` (py-amqp, Celery's client) that every thread
shares, with publisher confirms, and returns once RabbitMQ confirmed the message.

Why not the event loop: a sync call handed to the transport's loop pays a thread hop and a
task per message, and the loop thread fights the callers for the GIL on every socket call.
Why one shared connection (``_amqp_pipe``): a thread waiting for its own confirm before the
next publish on a connection of its own caps every connection at one message per round
trip; threads sharing a connection keep many messages in flight on one channel, written
together, and RabbitMQ confirms them together (issue #18). Measured with 32 threads, one
connection sent as fast as two, for half the sockets and reader threads.

What is declared (a queue, its dead letters, the delay cascade, the directory entry) stays
the transport's: a queue this process has not declared yet is declared once on the
transport's loop, then written to from any thread. A batch of several messages goes through
the loop too, where its confirms are awaited together.
"""

from __future__ import annotations

import asyncio
import os
import threading
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
    from hubbub.transports._amqp_pipe import LOST, Pipe

from hubbub.errors import TransportUnavailable
from hubbub.transports._amqp_failover import Failover
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

# Seconds idle after which a connection is not trusted: with no heartbeats, a connection a
# firewall or NAT dropped in silence would look open until a publish timed out.
RETIRE = 30.0
_PERSISTENT = 2
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
        # The kernel's timeouts (SO_RCVTIMEO, SO_SNDTIMEO) on a blocking socket bound the
        # handshake's reads and every write; a Python-level timeout would poll before every
        # recv and switch the socket's mode (a syscall each) twice per call. A confirm's
        # wait is bounded by the pipe.
        "read_timeout": publish_timeout,
        "write_timeout": publish_timeout,
        # No heartbeats (nothing sends them while a connection is idle): one the broker
        # closes is seen by its reader thread at once, and one idle for long is replaced.
        "heartbeat": 0,
        "client_properties": {"connection_name": f"hubbub producer {os.getpid()}"},
    }


class AMQPSyncPublisher(SyncPublisher):
    """The transport's ``publish`` from plain threads, over one shared connection with
    many confirms in flight.

    Args:
        transport: the connected transport whose queues and options it uses.
        loop: the loop the transport belongs to, for declarations and batches.
    """

    def __init__(self, transport: AMQPTransport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        # A rotation of its own: the loop's connection and this one fail over independently.
        self._failover = Failover(transport._link.urls)
        self._options = [options(u, connect_timeout=transport.connect_timeout,
                                 publish_timeout=transport.publish_timeout)
                         for u in self._failover.urls]
        self._names: dict[str, str] = {}  # queue -> its AMQP queue, for names checked
        self._pipe: Pipe | None = None
        self._opening = threading.Lock()  # one thread replaces the connection
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
        if self._pid != os.getpid():  # a forked child: the parent's socket is not ours (nor
            # its reader thread): dropped unclosed, as shutting it would cut the parent's.
            self._pipe, self._opening, self._pid = None, threading.Lock(), os.getpid()
        pipe = self._pipe
        if pipe is None or pipe.failed is not None or time.monotonic() - pipe.used_at > RETIRE:
            pipe = self._replace(pipe)
        pipe.send(exchange, key, message)

    def _replace(self, old: Pipe | None) -> Pipe:
        """The connection, open and usable: a new one for one that failed or sat idle past
        ``RETIRE`` (closed politely if it answers at once, else aborted)."""
        with self._opening:
            pipe = self._pipe
            if pipe is not old and pipe is not None and pipe.failed is None:
                return pipe  # replaced by another thread meanwhile
            if self._closed:
                raise TransportUnavailable(f"the RabbitMQ transport {self._transport.url} "
                                           "was closed; connect it again to send")
            self._pipe = None
            if pipe is not None:
                pipe.close(0.2)
            pipe = self._pipe = self._open()
            return pipe

    def _open(self) -> Pipe:
        """A new connection, trying the URLs in turn with backoff for ``connect_timeout``."""
        attempt = self._failover.attempt(time.monotonic() + self._transport.connect_timeout)
        while True:
            try:
                return Pipe(amqp.Connection(**self._options[attempt.index]), attempt.where,
                            self._transport.publish_timeout)
            except (amqp.exceptions.AMQPError, *LOST) as exc:
                attempt.failed(exc)
            pause = attempt.backoff(time.monotonic())  # raises once the deadline has passed
            if pause:
                time.sleep(pause)  # backoff between rounds of connection attempts

    def close(self) -> None:
        """Close the connection and end its reader thread; a send still waiting for its
        confirm fails."""
        with self._opening:
            self._closed = True
            pipe, self._pipe = self._pipe, None
        if pipe is not None and self._pid == os.getpid():
            pipe.close(1.0)  # a silent broker: one second
