"""A small asyncio client of beanstalkd's text protocol (see docs/beanstalk.md).

beanstalkd answers the commands of one connection in order, so a batch (``reserve`` x 20,
``delete`` x 20) is one write and one round trip: ``Connection.call`` writes every command at
once and a single reader task pairs each answer with the oldest command still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence

from hubbub.errors import TransportError, TransportUnavailable

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
