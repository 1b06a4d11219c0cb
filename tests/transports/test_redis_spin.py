"""A lone send from a plain thread polls its socket for Redis's reply before it sleeps
(issue #18): the reply is read whole either way, polling that stops paying off is skipped
for longer and longer, and a send never polls while another thread of the process is sending.
The publisher's tests run against the shared Redis at 127.0.0.1:6379 in their own key prefix;
the round trip's own tests use a socket pair."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from hubbub._redis import SPIN, RedisURL
from hubbub.errors import ConfigurationError
from hubbub.transports import _redis_sync
from hubbub.transports._redis_sync import RedisSyncPublisher, _poll, _roundtrip
from tests.transports.test_redis import admin, opened, out, url  # fixtures

__all__ = ["admin", "opened", "url"]


class _Conn:
    """The parts of a redis-py connection ``_roundtrip`` uses, on one end of a socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.closed = False

    def disconnect(self) -> None:
        self.closed = True

    def _host_error(self) -> str:
        return "pair:0"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, server = socket.socketpair()
    ours.settimeout(5)  # as redis-py's socket_timeout: a non-blocking descriptor
    try:
        yield ours, server
    finally:
        ours.close()
        server.close()


def test_a_reply_already_there_is_caught_by_polling(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, server = pair
    server.sendall(b"$3\r\n1-0\r\n")
    assert _roundtrip(_Conn(ours), b"packed", spin=0.01) is True
    assert server.recv(64) == b"packed"


def test_a_reply_slower_than_the_poll_is_still_read_whole_by_recv(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, server = pair
    conn = _Conn(ours)
    answer = threading.Timer(0.05, server.sendall, [b"$3\r\n1-0\r\n"])
    answer.start()
    try:
        assert _roundtrip(conn, b"packed", spin=1e-6) is False  # gave up polling, then slept
    finally:
        answer.join()
    assert not conn.closed


def test_a_reply_split_between_the_poll_and_recv_is_read_whole(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, server = pair
    server.sendall(b"$3\r\n1-")  # what the poll gets; the rest comes after it gave up
    rest = threading.Timer(0.05, server.sendall, [b"0\r\n"])
    rest.start()
    try:
        assert _roundtrip(_Conn(ours), b"packed", spin=0.01) is True
    finally:
        rest.join()
    ours.setblocking(False)
    with pytest.raises(BlockingIOError):  # nothing of this reply left for the next send
        ours.recv(64)


def test_a_server_that_closes_while_polled_is_a_connection_error(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, server = pair
    server.close()
    conn = _Conn(ours)
    with pytest.raises(RedisConnectionError):
        _roundtrip(conn, b"packed", spin=0.01)
    assert conn.closed


def test_a_tls_or_other_socket_is_never_polled(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, server = pair

    class Wrapped(socket.socket):  # as ssl.SSLSocket: records must go through its recv
        pass

    wrapped = Wrapped(fileno=ours.detach())
    try:
        server.sendall(b"$3\r\n1-0\r\n")
        assert _poll(wrapped, 0.01) is None
        assert _roundtrip(_Conn(wrapped), b"packed", spin=0.01) is False
    finally:
        wrapped.close()


def test_gevents_sockets_are_never_polled() -> None:
    """Under monkey-patching ``socket.socket`` is gevent's; a poll would never yield to the
    hub, holding every other greenlet (and a gevent time limit) while it spins."""
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import socket\n"
        "from hubbub.transports._redis_sync import _poll\n"
        "a, b = socket.socketpair()\n"
        "b.sendall(b'x')\n"
        "print(type(a).__module__, _poll(a, 0.01))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    module, _, polled = done.stdout.strip().partition(" ")
    assert module.startswith("gevent")
    assert polled == "None"


def test_a_plain_socket_with_a_reply_waiting_is_polled(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, server = pair
    server.sendall(b"x")
    assert _poll(ours, 0.01) == b"x"


def test_spin_us_sets_the_poll_and_zero_turns_it_off() -> None:
    assert RedisURL.parse("redis://h").spin == SPIN
    assert RedisURL.parse("redis://h?spin_us=250").spin == pytest.approx(250e-6)
    assert RedisURL.parse("redis://h?spin_us=0").spin == 0
    for bad in ("-1", "20000", "nan", "x"):
        with pytest.raises(ConfigurationError, match=r"spin_us|bad number"):
            RedisURL.parse(f"redis://h?spin_us={bad}")


def _counted_polls(monkeypatch: pytest.MonkeyPatch, result: Any) -> list[str]:
    """Make every poll return ``result`` (None: timed out) after waiting for the reply, and
    record the name of each thread that polled."""
    polled: list[str] = []

    def poll(sock: socket.socket, spin: float) -> bytes | None:
        polled.append(threading.current_thread().name)
        if result is None:
            return None  # recv then reads the reply
        got: bytes = sock.recv(4096)  # the real reply, read the sleeping way
        return got

    monkeypatch.setattr(_redis_sync, "_poll", poll)
    return polled


def _send(publisher: RedisSyncPublisher, times: int) -> None:
    for i in range(times):
        publisher.publish([out(str(i))])


async def _warm(opened: Any) -> tuple[Any, RedisSyncPublisher]:
    """A transport and its sync publisher, after one send: a new queue goes through the
    script, so the polling state starts afresh at the next send."""
    t = await opened()
    publisher = t.sync_publisher()
    assert isinstance(publisher, RedisSyncPublisher)
    await asyncio.to_thread(_send, publisher, 1)
    return t, publisher


async def test_polls_that_time_out_are_skipped_for_twice_as_many_sends_each_time(
    opened: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    t, publisher = await _warm(opened)
    polled = _counted_polls(monkeypatch, None)
    await asyncio.to_thread(_send, publisher, 15)
    assert len(polled) == 3  # sends 1, 4 and 9 poll; 2-3 and 5-8 rest; 10-15 rest too
    got = await t.fetch(["q"], limit=20, lease=30, wait=1)
    assert len(got) == 16  # every send still arrived


async def test_the_rest_after_polls_that_time_out_stops_growing_at_1024_sends(
    opened: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, publisher = await _warm(opened)
    polled = _counted_polls(monkeypatch, None)
    await asyncio.to_thread(_send, publisher, 3100)
    # Polls at sends 1, 4, 9, ..., 1032 (rests of 2, 4, ... 1024), then every 1025th: 2057
    # and 3082. Rests that kept doubling would leave out the last (2048 after 2057).
    assert len(polled) == 12


async def test_polls_that_catch_their_reply_keep_polling(
    opened: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, publisher = await _warm(opened)
    polled = _counted_polls(monkeypatch, b"caught")
    await asyncio.to_thread(_send, publisher, 10)
    assert len(polled) == 10


async def test_a_send_never_polls_while_another_thread_is_sending(
    url: str, opened: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    t, publisher = await _warm(opened)
    inside, release = threading.Event(), threading.Event()
    polled: list[str] = []

    def poll(sock: socket.socket, spin: float) -> bytes | None:
        polled.append(threading.current_thread().name)
        if threading.current_thread().name == "first":
            inside.set()  # "first" is mid-send until "second" has sent
            assert release.wait(10)
        return None

    monkeypatch.setattr(_redis_sync, "_poll", poll)
    first = threading.Thread(target=_send, args=(publisher, 1), name="first")
    first.start()
    try:
        assert await asyncio.to_thread(inside.wait, 10)
        second = threading.Thread(target=_send, args=(publisher, 3), name="second")
        second.start()
        await asyncio.to_thread(second.join, 10)
        assert not second.is_alive()
    finally:
        release.set()
        await asyncio.to_thread(first.join, 10)
    assert polled == ["first"]
    got = await t.fetch(["q"], limit=10, lease=30, wait=1)
    assert len(got) == 5
