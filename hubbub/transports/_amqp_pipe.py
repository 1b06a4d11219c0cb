"""One producer connection that many threads publish on at once, its confirms pipelined
(issue #18): RabbitMQ confirms many messages in flight on one channel far faster than one
at a time, often with one ack for several (``multiple``).

A caller frames its message (the bytes ``Channel.basic_publish`` writes) and queues it;
whichever caller finds the socket free writes everything queued in one send, numbering the
messages in the order written (a confirming channel's delivery tags count its publishes
from 1). Each caller then waits for its own message's fate, told by the pipe's reader
thread: ``basic.ack`` (confirmed), ``basic.return`` before it (unroutable), ``basic.nack``,
or the connection's end. Every wait is bounded by ``publish_timeout``.

Over plain TCP the reader blocks in ``recv`` while callers write: a socket reads and writes
at once. An SSL object must not be used by two threads at once, so over TLS reads and
writes take turns (``_io``): the reader waits for the socket to be readable outside the
lock, then reads what has come without blocking. The reader runs the confirm callbacks
holding the lock, and a nack's callback closes the connection from there: the lock is
reentrant.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import select
import struct
import threading
import time
from typing import Any

import amqp  # type: ignore[import-untyped]
from amqp import spec
from amqp.method_framing import FRAME_OVERHEAD, frame_writer  # type: ignore[import-untyped]
from amqp.serialization import dumps  # type: ignore[import-untyped]

from hubbub._redact import redact
from hubbub.errors import TransportError, TransportUnavailable

NO_ROUTE = 312  # the reply code of a mandatory message that no queue took
# Not "connection.blocked": py-amqp reads the socket before every publish for its notice,
# and only the reader thread may read. A blocked connection shows as a confirm that does not
# come in publish_timeout, and the error names memory and disk alarms.
CAPABILITIES = {"consumer_cancel_notify": True, "authentication_failure_close": True,
                "connection.blocked": False}
# What the client raises when the connection or the socket fails.
LOST = (OSError, EOFError)
_PUBLISH = struct.pack(">HH", *spec.Basic.Publish)
_FRAME_END = b"\xce"
_head = struct.Struct(">BHI").pack  # a frame's type, channel and size
_content = struct.Struct(">HHQ").pack  # a content header's class, weight and body size


def translate(exc: BaseException, where: str, timeout: float) -> BaseException:
    """The hubbub error for a driver error (a new one each call, caused by ``exc``);
    anything else as it is."""
    errors = amqp.exceptions
    if isinstance(exc, TimeoutError) or (  # a confirm's wait; a write's (SO_SNDTIMEO)
            isinstance(exc, OSError) and exc.errno == errno.EAGAIN):
        out: BaseException = TransportUnavailable(
            f"RabbitMQ at {where} did not confirm a publish within {timeout:g}s; is it "
            "reachable, and free of memory or disk alarms?")
    elif isinstance(exc, errors.ChannelError) and exc.reply_code == NO_ROUTE:
        out = TransportError(f"RabbitMQ at {where} returned a message as unroutable; was "
                             "its queue deleted while this process ran?")
    elif isinstance(exc, errors.MessageNacked):
        out = TransportUnavailable(f"RabbitMQ at {where} refused (nack) a message; "
                                   "retrying on a new connection")
    elif isinstance(exc, errors.ChannelError):
        out = TransportError(f"RabbitMQ at {where}: {redact(str(exc))}")
    elif isinstance(exc, (errors.AMQPError, *LOST)):
        out = TransportUnavailable(f"RabbitMQ at {where}: "
                                   f"{redact(str(exc)) or type(exc).__name__}")
    else:
        return exc
    out.__cause__ = exc
    return out


class _Waiter:
    """One caller's message until its fate is known: ``lock`` is held until then."""

    __slots__ = ("error", "exchange", "key", "lock", "message")

    def __init__(self, exchange: str, key: str, message: Any) -> None:
        self.exchange, self.key, self.message = exchange, key, message
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.lock.acquire()

    def settle(self, error: BaseException | None) -> None:
        """Wake the caller; called once, by whoever took the waiter out of the pipe."""
        if self.error is None:  # a return (unroutable) comes before its ack, and wins
            self.error = error
        self.lock.release()


class Pipe:
    """A blocking connection (py-amqp) whose confirming channel any thread publishes on.

    Args:
        conn: an unopened ``amqp.Connection``; opened here.
        where: the broker's URL, password masked, for errors.
        timeout: ``publish_timeout``: how long a caller waits for its confirm.
    """

    def __init__(self, conn: Any, where: str, timeout: float) -> None:
        self.conn, self.where, self.timeout = conn, where, timeout
        self._io: threading.RLock | None = None
        conn.negotiate_capabilities = CAPABILITIES
        try:
            conn.connect()
            channel = conn.channel()
            channel.confirm_select()
        except BaseException:
            self._abort()
            raise
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)
        self._channel_id = channel.channel_id
        if conn.ssl:  # an SSL object is not for two threads at once: they take turns
            self._io = threading.RLock()  # the reader, holding it, may abort (a nack)
        self.failed: BaseException | None = None  # the first reason it cannot be used
        self.used_at = time.monotonic()
        self._args: dict[tuple[str, str], bytes] = {}  # a publish's arguments, by route
        self._room = conn.frame_max - 8  # what one frame holds, as py-amqp counts
        self._framed: list[bytes] = []  # what py-amqp's framer wrote: one message's frames
        self._frame = frame_writer(conn, self)  # writes through self.write
        self._send_bytes = conn.transport.write
        self._framing = threading.Lock()  # the framer's buffer and _framed
        self._outbox: collections.deque[tuple[bytes, _Waiter]] = collections.deque()
        self._writing = threading.Lock()  # held by the one thread writing (and numbering)
        self._tag = 0  # the delivery tag of the last message written
        self._low = 1  # no message below this tag waits for its confirm
        self._waiting: dict[int, _Waiter] = {}  # delivery tag -> waiter, written, unsettled
        self._reader = threading.Thread(target=self._read if self._io is None else self._read_tls,
                                        daemon=True,
                                        name=f"hubbub amqp producer {where}")
        self._reader.start()

    def write(self, frames: Any) -> None:
        """The framer's output (a view of its buffer, reused for the next message)."""
        self._framed.append(bytes(frames))

    def send(self, exchange: str, key: str, message: Any) -> None:
        """Publish ``message`` (``mandatory``) and wait until RabbitMQ confirmed it.

        Raises:
            TransportError: the message was returned as unroutable, or the broker closed
                the channel.
            TransportUnavailable: no confirm within ``timeout``, a nack, or the
                connection failed; nothing may be assumed sent.
        """
        self.used_at = time.monotonic()
        waiter = _Waiter(exchange, key, message)
        args = self._args.get((exchange, key))
        if args is None:  # as Channel.basic_publish packs them: mandatory
            if len(self._args) > 1000:  # routes are queues and delay steps: few
                self._args.clear()
            args = self._args[exchange, key] = dumps("Bssbb", (0, exchange, key, True, False))
        self._outbox.append((self._frames(args, message), waiter))
        # Whoever takes _writing writes what every thread queued; one that finds it taken
        # leaves its message to the writer, who looks at the outbox again after letting go.
        while self._outbox and self._writing.acquire(blocking=False):
            try:
                self._write()
            finally:
                self._writing.release()
        if not waiter.lock.acquire(timeout=self.timeout):
            # What it owes may never come (a silent broker, a dropped link): no one uses
            # this connection again, and what else waits on it fails now.
            self.fail(TimeoutError())
            raise translate(TimeoutError(), self.where, self.timeout)
        if waiter.error is not None:
            raise waiter.error

    def _frames(self, args: bytes, message: Any) -> bytes:
        """The frames of one publish, byte for byte as py-amqp's framer writes them: for a
        message that fits in one frame, method, content header and body (none if empty)
        frames packed here (in half the time); a bigger one by py-amqp, in chunks."""
        body, properties = message.body, message._serialize_properties()
        if len(args) + len(properties) + len(body) + FRAME_OVERHEAD > self._room:
            with self._framing:
                self._frame(1, self._channel_id, spec.Basic.Publish, args, message)
                data = b"".join(self._framed)
                self._framed.clear()
            return data
        channel = self._channel_id
        header = _content(spec.Basic.Publish[0], 0, len(body)) + properties
        parts = [_head(1, channel, len(args) + 4), _PUBLISH, args, _FRAME_END,
                 _head(2, channel, len(header)), header, _FRAME_END]
        if body:
            parts += (_head(3, channel, len(body)), body, _FRAME_END)
        return b"".join(parts)

    def _write(self) -> None:
        """Number and send every queued message at once (holding ``_writing``)."""
        batch = []
        waiting = self._waiting
        while True:
            try:
                data, waiter = self._outbox.popleft()
            except IndexError:
                break
            self._tag += 1
            waiting[self._tag] = waiter  # before the write: its ack may come at once
            batch.append(data)
        if batch and self.failed is None:
            data = batch[0] if len(batch) == 1 else b"".join(batch)
            try:
                if self._io is None:
                    self._send_bytes(data)
                else:
                    with self._io:
                        self._send_bytes(data)
            except Exception as exc:  # a frame may be half written: the stream is lost
                self.fail(exc)
            except BaseException as exc:
                self.fail(exc)
                raise
        if self.failed is not None:  # before, during or since the write: none will be acked
            self._settle_all()

    def _read(self) -> None:
        """The reader thread: frames in until the connection ends."""
        conn = self.conn
        try:
            while conn.connected:  # until it breaks, or closes (Close-Ok)
                try:
                    conn.drain_events()
                except TimeoutError:  # nothing for publish_timeout (SO_RCVTIMEO): idle
                    continue
        except BaseException as exc:  # the socket closed or broke; a channel closed
            self.fail(exc)
        self.fail(amqp.exceptions.RecoverableConnectionError("connection closed"))

    def _read_tls(self) -> None:
        """The reader thread over TLS: waits for data without the lock, then reads every
        frame that can be read at once (a partial frame is kept for the next turn)."""
        assert self._io is not None
        conn = self.conn
        sock = conn.transport.sock
        try:
            while conn.connected:
                select.select([sock], [], [], self.timeout)
                with self._io, contextlib.suppress(TimeoutError):
                    while conn.connected:
                        conn.drain_events(timeout=0)
        except BaseException as exc:
            self.fail(exc)
        self.fail(amqp.exceptions.RecoverableConnectionError("connection closed"))

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, nacked=False)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        # The broker failing inside (a quorum queue without a leader), and it may keep
        # nacking on this channel: the messages fail, and the next go on a new connection.
        self._settle(tag, multiple, nacked=True)
        self.fail(amqp.exceptions.MessageNacked())

    def _settle(self, tag: int, multiple: bool, *, nacked: bool) -> None:
        """Wake the callers of ``tag`` (and, if ``multiple``, of every tag below it)."""
        pop = self._waiting.pop
        for t in range(self._low, tag + 1) if multiple else (tag,):
            waiter = pop(t, None)
            if waiter is not None:
                waiter.settle(translate(amqp.exceptions.MessageNacked(), self.where,
                                        self.timeout) if nacked else None)
        if multiple:
            self._low = max(self._low, tag + 1)
        elif tag == self._low:
            self._low += 1

    def _on_return(self, exc: Any, exchange: str, key: str, message: Any) -> None:
        """A mandatory message no queue took: its ack follows; mark the oldest waiter for
        these bytes on this route (messages are returned in the order they were sent)."""
        mid = message.properties.get("message_id")
        for waiter in list(self._waiting.values()):  # in tag order
            if (waiter.error is None and waiter.exchange == exchange and waiter.key == key
                    and waiter.message.properties.get("message_id") == mid
                    and waiter.message.body == message.body):
                waiter.error = translate(exc, self.where, self.timeout)
                return

    def fail(self, exc: BaseException) -> None:
        """Stop using this pipe: what waits fails with ``exc`` (the first reason given
        wins), and the socket is closed, which ends the reader thread."""
        if self.failed is None:
            self.failed = exc
        self._settle_all()
        self._abort()

    def _settle_all(self) -> None:
        """Fail every message not confirmed yet, written or still queued."""
        assert self.failed is not None
        while True:
            try:
                _, waiter = self._waiting.popitem()
            except KeyError:
                break
            waiter.settle(translate(self.failed, self.where, self.timeout))
        while True:
            try:
                _, waiter = self._outbox.popleft()
            except IndexError:
                break
            waiter.settle(translate(self.failed, self.where, self.timeout))

    def _abort(self) -> None:
        """Close the socket now, without the closing handshake a silent broker never ends."""
        with contextlib.suppress(Exception), self._io or contextlib.nullcontext():
            self.conn.collect()

    def close(self, within: float = 1.0) -> None:
        """Close politely within ``within`` seconds, else abort, and end the reader thread.
        Messages not confirmed by then fail."""
        if self.failed is None:
            self.failed = amqp.exceptions.RecoverableConnectionError("connection closed")
        if within > 0 and self._writing.acquire(timeout=within):
            try:  # the reader takes the Close-Ok and closes the socket
                with contextlib.suppress(Exception), self._io or contextlib.nullcontext():
                    self.conn.send_method(spec.Connection.Close, "BsBB", (0, "", 0, 0))
            finally:
                self._writing.release()
            self._reader.join(within)
        self.fail(self.failed)
        if self._reader is not threading.current_thread():
            self._reader.join(self.timeout)  # at once: the socket is shut (TLS: its select)
