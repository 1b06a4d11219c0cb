"""The floor of a confirmed send on Redis: one round trip on a bare socket, no library.

Run with the peers' venv (bench/setup_peers.sh) or any Python:

    BENCH_PREFIX=hbbx1 bench/.venv-peers/bin/python bench/peers/floor_redis.py enqueue 5000

Each send is one ``XADD`` of a 400-byte field (about the size of hubbub's message for a no-op
task, and larger than Huey's) to a stream named after BENCH_PREFIX, written with one
``sendall`` on a socket with TCP_NODELAY, then its reply read: what any library that waits for
its broker's reply must at least do, with no message to build and no reply to parse. How close
a library comes says how much its own Python costs per send. Only ``enqueue``: there is
nothing to drain.

The reply is waited for in a blocking ``recv`` (the thread sleeps until it comes, as redis-py
and every peer wait), or with ``BENCH_FLOOR=poll`` by polling the socket without sleeping
until it comes (what hubbub's ``delay()`` does for up to 100 us before it sleeps): a thread
that sleeps also pays for its CPU going idle and waking up, which polling saves.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Sequence

import _driver

FIELD = b"x" * 400
POLL = os.environ.get("BENCH_FLOOR") == "poll"


class _Floor:
    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        key = f"{_driver.PREFIX}:floor".encode()
        self._command = b"".join((
            b"*5\r\n$4\r\nXADD\r\n", b"$%d\r\n%s\r\n" % (len(key), key), b"$1\r\n*\r\n",
            b"$1\r\nm\r\n", b"$%d\r\n%s\r\n" % (len(FIELD), FIELD)))

    def _connect(self) -> socket.socket:
        url = urllib.parse.urlsplit(_driver.URL)
        sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def send(self, task: str, pool: str, n: int, bulk: bool, args: _driver.Args) -> None:
        if self._sock is None:
            self._sock = self._connect()
        sock, command = self._sock, self._command
        sock.setblocking(not POLL)
        for _ in range(n):
            sock.sendall(command)
            while True:  # "$15\r\n<id>\r\n": one small packet
                try:
                    reply = sock.recv(256)
                    break
                except BlockingIOError:  # polling, and not there yet
                    continue
            if not reply.startswith(b"$"):
                raise RuntimeError(f"XADD failed: {reply!r}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


def _nothing_to_drain(*_: object) -> Sequence[Sequence[str]]:
    raise SystemExit("floor_redis.py measures sends only: use the enqueue mode")


_floor = _Floor()
system = _driver.System(name="a bare round trip", send=_floor.send, workers=_nothing_to_drain,
                        remaining=lambda task: 0, pools=("none",), close=_floor.close)

if __name__ == "__main__":
    _driver.main(system)
