"""A TCP proxy a test owns, to cut a broker connection without touching the shared server.

It listens on a free loopback port and forwards bytes both ways to ``upstream``. ``cut()``
closes every connection (both sides) and stops listening, so new connections are refused;
``stall()`` keeps every connection open but forwards nothing (a server that stops answering);
``restore()`` ends either: it listens again on the same port and forwards again. The proxy
runs on an asyncio loop in a thread of its own, so a synchronous test (or one whose loop is
busy) can drive it, and clients in any process or thread can go through it. Given a server
``tls`` context, it ends TLS too: a plain server behind it looks like a TLS one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Proxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream`` until cut.

    Args:
        upstream: (host, port) of the real server.
        tls: the server side of TLS, which clients then speak to the proxy (None: plain).

    Attributes:
        port: where clients connect (picked free on ``start``, kept across ``restore``).
        accepted: connections accepted so far (a reconnect shows as a rise).
        handshakes: with ``tls``, the TLS version of every connection whose handshake
            completed.
    """

    def __init__(self, upstream: tuple[str, int], tls: ssl.SSLContext | None = None) -> None:
        self.upstream = upstream
        self.tls = tls
        self.port = 0
        self.accepted = 0
        self.handshakes: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._stalled = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._serving: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        """Client connections being forwarded now."""
        return self._call(self._count())

    def __enter__(self) -> Proxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def cut(self) -> None:
        """Close every connection, both sides, and refuse new ones until ``restore()``."""
        self._call(self._cut())

    def stall(self) -> None:
        """Keep every connection open but forward nothing, until ``restore()``."""
        self._call(self._stall(True))

    def restore(self) -> None:
        """Accept connections again, on the same port, and forward again."""
        self._call(self._listen())
        self._call(self._stall(False))

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_closed():
            self._loop.close()

    # -- on the proxy's loop ---------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=15)

    async def _count(self) -> int:
        return len(self._serving)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True, ssl=self.tls,
                ssl_handshake_timeout=10 if self.tls is not None else None)
            self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stall(self, stalled: bool) -> None:
        self._stalled = stalled
        for writer in self._writers:
            if stalled:
                writer.transport.pause_reading()
            else:
                writer.transport.resume_reading()

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # at once, as a dropped network or a dead server would
        await asyncio.gather(*self._serving, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        assert me is not None
        self._serving.add(me)
        self.accepted += 1
        if self.tls is not None:
            self.handshakes.append(writer.get_extra_info("ssl_object").version())
        self._writers.add(writer)
        pair = [writer]
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            pair.append(up_writer)
            self._writers.add(up_writer)
            if self._stalled:
                for w in pair:
                    w.transport.pause_reading()
            pipes = [asyncio.create_task(self._pipe(reader, up_writer)),
                     asyncio.create_task(self._pipe(up_reader, writer))]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in pair:  # one side ended: end the other too
                    w.transport.abort()
                await asyncio.gather(*pipes, return_exceptions=True)
        except OSError:
            pass  # the upstream refused: the client sees its connection closed
        finally:
            for w in pair:
                w.transport.abort()
                self._writers.discard(w)
            self._serving.discard(me)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
