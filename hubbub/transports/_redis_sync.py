"""The Redis transport's publisher for plain threads (``RedisTransport.sync_publisher``):
``task.delay()`` without an event loop, on one Redis server."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hubbub._redis import translate
from hubbub._redis_wire import pack_xadd_head
from hubbub._text import clean_text
from hubbub.transports._redis_lua import (
    CHUNK,
    GROUP,
    LEVELS,
    SCRIPTS,
    QueueKeys,
    chunks,
    publish_argv,
)
from hubbub.transports._safe import check_queue, due_at
from hubbub.transports.base import Outgoing, SyncPublisher

if TYPE_CHECKING:
    from hubbub.transports.redis import RedisTransport

_GROUP_BYTES = GROUP.encode()


class RedisSyncPublisher(SyncPublisher):
    """The transport's ``publish`` from plain threads: the same keys and entries, sent on
    connections of its own (one per thread at a time).

    The common send, one message due now, is one XADD on its priority's stream, packed here
    and written straight to a connection: redis-py's client adds about as much CPU per call
    as the round trip itself (pool, command lookup, hooks). Anything else (several messages,
    an ETA) runs the ``publish`` script through the client, as on the event loop.

    Spin then sleep: a lone send polls its socket for the reply for up to ``config.spin``
    (100 us) before it sleeps in ``recv``. On loopback the reply takes about 20 us, but a
    thread that sleeps for it pays for its CPU going idle and waking (some 35 us more on this
    2-core VM; issue #18). A send polls only while no other thread of this process waits for
    a reply on these connections (several threads polling would take the CPU from each
    other), and only while it pays: a poll that times out skips polling for the next 2, 4,
    ... 1024 sends, so a server slower than the budget costs it next to nothing. One that answers
    within it costs up to that much CPU per send, in exchange for the send's wake-up. TLS and
    gevent's sockets always sleep (see ``_poll``).
    """

    def __init__(self, transport: RedisTransport, client: redis.Redis) -> None:
        self._transport = transport
        self._client = client
        self._script = client.register_script(SCRIPTS["publish"])
        # queue -> its keys in the scripts' order, encoded once: redis-py packs bytes as they
        # are, and packing the script's 16 keys and its arguments is most of a call's CPU.
        self._keys: dict[str, list[bytes]] = {}
        self._heads: dict[tuple[str, int], bytes] = {}  # (queue, priority) -> packed XADD head
        # Connections no thread is using. list.pop and list.append are atomic: no lock. A
        # forked child starts a list of its own (the parent's sockets are the parent's).
        self._idle: list[Any] = []  # redis.connection.Connection, untyped
        self._made = 0  # connections made in this process: made - idle = sends in flight
        self._making = threading.Lock()  # for _made: a lost count would stop polling for good
        self._pid = os.getpid()
        self._spin = transport.config.spin
        self._misses = 0  # polls in a row that timed out
        self._rest = 0  # sends left that sleep at once, after a poll timed out

    def publish(self, items: Sequence[Outgoing]) -> None:
        if not items:
            return
        transport = self._transport
        if len(items) == 1 and items[0].queue in transport._known:
            item = items[0]
            if item.eta is None or due_at(item.eta, transport.clock.time()) is None:
                check_queue(item)
                try:
                    self._xadd(item)
                except Exception:  # translated here, not by a `with` around every send
                    with translate(transport.config):
                        raise
                return
        prefix = transport.config.prefix
        by_queue = publish_argv(items, transport.clock.time())
        with translate(transport.config):
            new = set(by_queue) - transport._known
            if new:
                self._client.sadd(f"{prefix}:queues", *sorted(new))
                transport._known |= new  # a race only repeats an idempotent SADD
            for queue, flat in by_queue.items():
                keys = self._keys.get(queue)
                if keys is None:
                    keys = self._keys[queue] = [
                        k.encode() for k in QueueKeys.of(prefix, queue).lua()]
                for chunk in chunks(flat, 4 * CHUNK):  # one after another: FIFO
                    self._script(keys=keys, args=[_GROUP_BYTES, *chunk])

    def _xadd(self, item: Outgoing) -> None:
        """XADD one message due now; as the script's ``enqueue`` writes it, except that a
        stream made here has no group yet: the claim script adopts such a stream from its
        first entry (see ``_CLAIM``)."""
        priority = min(max(item.priority, 0), LEVELS - 1)
        head = self._heads.get((item.queue, priority))
        if head is None:
            stream = QueueKeys.of(self._transport.config.prefix, item.queue).ready[priority]
            head = self._heads[(item.queue, priority)] = pack_xadd_head(stream)
        try:
            ident = item.id.encode()
        except UnicodeEncodeError:
            ident = clean_text(item.id).encode()
        body = item.body
        packed = b"%s$%d\r\n%s\r\n$4\r\nbody\r\n$%d\r\n%s\r\n" % (
            head, len(ident), ident, len(body), body)
        if self._pid != os.getpid():
            self._idle, self._made, self._pid = [], 0, os.getpid()
        try:
            conn = self._idle.pop()
        except IndexError:
            pool = self._client.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            with self._making:
                self._made += 1
        spin = 0.0
        if self._spin and self._made - len(self._idle) <= 1:  # no other send in flight
            if self._rest > 0:  # two threads may both take one: it only ends the rest sooner
                self._rest -= 1
            else:
                spin = self._spin
        try:
            caught = conn.retry.call_with_retry(lambda: _roundtrip(conn, packed, spin),
                                                lambda _error: conn.disconnect())
            if spin:
                self._misses = 0 if caught else min(self._misses + 1, 10)
                self._rest = (1 << self._misses) if self._misses else 0
        except BaseException:
            conn.disconnect()  # never reuse a connection that may hold an unread reply
            raise
        finally:
            self._idle.append(conn)

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()
        self._client.close()


def _roundtrip(conn: Any, packed: bytes, spin: float = 0.0) -> bool:
    """Send one packed XADD on ``conn``'s own socket and read its reply, a bulk string (the
    new entry's id, not needed) or an error. Straight on the socket: redis-py's
    ``send_packed_command`` and ``read_response`` (hiredis) cost about as much CPU as the
    rest of a ``delay()``. Socket errors become redis-py's, as its own calls raise them (the
    caller's retry and ``translate`` expect those); the connection is then closed.

    The reply's first bytes are polled for up to ``spin`` seconds (``_poll``), then waited
    for in ``recv``. Returns whether polling got them (False when ``spin`` is 0).

    Raises:
        ResponseError: the server replied with an error (redis-py's class for its code).
        ConnectionError, TimeoutError: redis-py's; the connection is closed.
    """
    sock = conn._sock
    if sock is None:
        conn.connect()
        sock = conn._sock
    try:
        sock.sendall(packed)
        got = _poll(sock, spin) if spin else None
        caught = got is not None
        data = got = sock.recv(4096) if got is None else got
        while True:
            if not got:
                conn.disconnect()
                raise RedisConnectionError("Connection closed by server.")
            end = data.find(b"\r\n")
            if end >= 0:
                kind = data[:1]
                if kind == b"$":
                    if len(data) >= end + int(data[1:end]) + 4:
                        return caught
                elif kind == b"-":  # the reply is whole: the connection is in step
                    raise conn._parser.parse_error(data[1:end].decode(errors="replace"))
                else:  # out of step: this connection cannot be trusted again
                    conn.disconnect()
                    raise RedisConnectionError(f"unexpected reply to XADD: {data[:64]!r}")
            got = sock.recv(4096)
            data += got
    except TimeoutError as exc:  # socket.timeout
        conn.disconnect()
        raise RedisTimeoutError(f"Timeout reading from {conn._host_error()}") from exc
    except OSError as exc:
        conn.disconnect()
        raise RedisConnectionError(f"Error while talking to {conn._host_error()}: {exc}"
                                   ) from exc


def _poll(sock: socket.socket, spin: float) -> bytes | None:
    """What ``sock`` has to read, polled for without sleeping for up to ``spin`` seconds;
    None if nothing came, or at once for a socket that is not the standard library's own
    (TLS, gevent) or not on a POSIX system. ``b""``: the server closed it.

    ``os.read`` on the descriptor, not ``sock.recv``: a socket with a timeout waits in
    ``poll()`` before every ``recv``, even with ``MSG_DONTWAIT``. The descriptor of such a
    socket is non-blocking; one without a timeout blocks here as ``recv`` would.
    """
    if type(sock).__module__ != "socket" or os.name != "posix":
        # ssl.SSLSocket; gevent's socket (under monkey-patching, socket.socket is gevent's,
        # and a poll that never yields would hold every greenlet); Windows, whose socket
        # handles are no file descriptors.
        return None
    fd, read, clock = sock.fileno(), os.read, time.perf_counter
    end = clock() + spin
    while True:
        try:
            return read(fd, 4096)
        except BlockingIOError:
            if clock() > end:
                return None
