"""A small asyncio client of beanstalkd's text protocol (see docs/beanstalk.md).

beanstalkd answers the commands of one connection in order, so a batch (``reserve`` x 20,
``delete`` x 20) is one write and one round trip: ``Connection.call`` writes every command at
once and a single reader task pairs each answer with the oldest command still waiting.
A transport holds its connections by role in ``Connections``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator, Sequence

from hubbub.errors import TransportError, TransportUnavailable
from hubbub.transports._timeouts import bounded

Reply = tuple[list[str], bytes | None]


class Connection:
    """One connection; commands written together are answered in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._pending: deque[asyncio.Future[Reply]] = deque()
        self.watching = {"default"}
        self.using = "default"
        self.closed = False
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    async def _read_loop(self) -> None:
        error: BaseException = ConnectionError("connection closed")
        try:
            while True:
                words = (await self._reader.readuntil(b"\r\n"))[:-2].decode().split()
                data = None
                size = {"RESERVED": 2, "FOUND": 2, "OK": 1}.get(words[0] if words else "")
                if size is not None:
                    data = (await self._reader.readexactly(int(words[size]) + 2))[:-2]
                future = self._pending.popleft()
                if not future.done():
                    future.set_result((words, data))
        except (OSError, EOFError, asyncio.IncompleteReadError, IndexError, ValueError) as exc:
            error = ConnectionError(f"connection lost ({exc or type(exc).__name__})")
        finally:
            self.closed = True
            while self._pending:
                future = self._pending.popleft()
                if not future.done():
                    future.set_exception(error)

    async def call(self, *commands: bytes) -> list[Reply]:
        """Send ``commands`` in one write; return their answers in order."""
        if self.closed:
            raise ConnectionError("connection closed")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        self._pending.extend(futures)
        try:
            self._writer.write(b"".join(commands))
            await self._writer.drain()
            return [await f for f in futures]
        except BaseException:  # lost, cut short or timed out: nobody waits for the rest
            for f in futures:
                if not f.done():
                    f.cancel()  # the reader skips it, so later answers stay in order
                elif not f.cancelled():
                    f.exception()  # seen: the error is the one being raised
            raise

    def watch(self, tubes: Sequence[str]) -> list[bytes]:
        """Commands that make this connection watch exactly ``tubes``."""
        wanted = set(tubes)
        cmds = [b"watch %s\r\n" % t.encode() for t in tubes if t not in self.watching]
        cmds += [b"ignore %s\r\n" % t.encode() for t in self.watching - wanted]
        self.watching = wanted
        return cmds

    def use(self, tube: str) -> list[bytes]:
        """Commands that make this connection put into ``tube``."""
        if tube == self.using:
            return []
        self.using = tube
        return [b"use %s\r\n" % tube.encode()]

    async def close(self) -> None:
        self.closed = True
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def parse_yaml(data: bytes | None) -> dict[str, str]:
    """beanstalkd's flat YAML answers (``stats``, ``stats-job``, ``stats-tube``)."""
    out = {}
    for line in (data or b"").decode().splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key] = value.strip()
    return out


def expect(reply: Reply, *ok: str) -> list[str]:
    """The words of ``reply``, if its first is one of ``ok``.

    Raises:
        TransportUnavailable: the server is out of memory or draining.
        TransportError: any other answer.
    """
    words = reply[0]
    if not words or words[0] not in ok:
        text = " ".join(words) or "nothing"
        if text in ("OUT_OF_MEMORY", "DRAINING"):
            raise TransportUnavailable(f"beanstalkd answered {text}; it is not accepting work")
        raise TransportError(f"beanstalkd answered {text!r}, expected {'/'.join(ok)}")
    return words


class Connections:
    """The connections of one transport, one per role, each opened on first use and again
    after it was lost; and the translation of their errors at the transport's boundary.

    Args:
        host, port: the server.
        connect_timeout: seconds to wait for a connection.
        publish_timeout: seconds a put may wait for the server's answers.
    """

    def __init__(self, host: str, port: int, connect_timeout: float,
                 publish_timeout: float) -> None:
        self.where = f"beanstalkd at {host}:{port}"
        self._host, self._port = host, port
        self._connect_timeout, self._publish_timeout = connect_timeout, publish_timeout
        self._conns: dict[str, Connection] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    def get(self, role: str) -> Connection | None:
        """The connection of ``role`` as it is (maybe closed), without opening one."""
        return self._conns.get(role)

    async def open(self, role: str) -> Connection:
        """The open connection of ``role``, connecting it first if needed.

        Raises:
            TransportUnavailable: the server cannot be reached within ``connect_timeout``.
        """
        conn = self._conns.get(role)
        if conn is not None and not conn.closed:
            return conn
        async with self._opening.setdefault(role, asyncio.Lock()):
            conn = self._conns.get(role)
            if conn is None or conn.closed:
                if conn is not None:
                    await conn.close()  # the server went away; drop its socket cleanly
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(self._host, self._port), self._connect_timeout
                    )
                except (OSError, TimeoutError) as exc:
                    raise TransportUnavailable(
                        f"{self.where} cannot be reached ({exc or 'timed out'});"
                        " is beanstalkd running?"
                    ) from exc
                conn = self._conns[role] = Connection(reader, writer)
            return conn

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Translate a lost connection into ``TransportUnavailable``."""
        try:
            yield
        except (ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            raise TransportUnavailable(f"{self.where}: {exc}") from exc

    def bounded(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Bound a publish by ``publish_timeout``: a server that stops answering (stopped,
        swapping, a dead network without a reset) must not hang the caller. What timed out
        may still have been put."""
        return bounded(self._publish_timeout, lambda: (
            f"{self.where} did not answer a put within {self._publish_timeout:g}s;"
            " is it running and reachable?"))

    async def close(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            await conn.close()
