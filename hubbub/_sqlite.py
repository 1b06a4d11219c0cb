"""One SQLite database file, used from asyncio: the shared plumbing of the SQLite transport
and result store.

All statements run on one dedicated thread that owns the connection, so the event loop
never blocks on disk or on another process's lock. Writes are short ``BEGIN IMMEDIATE``
transactions. Changes made by other processes are noticed through ``PRAGMA data_version``,
polled every few milliseconds on a second connection: a cheap read of shared memory that
gives low pickup latency without a busy loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from hubbub.errors import ConfigurationError, TransportError, TransportUnavailable

T = TypeVar("T")
POLL = 0.004  # seconds between looks at data_version while waiting


def sqlite_path(url: str) -> str:
    """The file path of ``sqlite:///relative.db`` or ``sqlite:////absolute.db``.

    Raises:
        ConfigurationError: the URL names no file.
    """
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc or not path.startswith("/") or len(path) < 2:
        raise ConfigurationError(
            f"SQLite URL {url!r} names no file; write sqlite:///relative.db or sqlite:////abs.db"
        )
    return path[1:]


class SQLiteFile:
    """A connection on its own thread, plus a watcher connection for change notices."""

    def __init__(self, url: str, schema: str) -> None:
        self.path = sqlite_path(url)
        self.schema = schema
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hubbub-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._watch: sqlite3.Connection | None = None

    def _open(self) -> None:
        parent = Path(self.path).parent
        if not parent.exists():
            raise TransportUnavailable(f"SQLite folder {str(parent)!r} does not exist; create it")
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(self.schema)
        self._conn = conn
        self._watch = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                      check_same_thread=False)

    async def open(self) -> None:
        if self._conn is None:
            await self.call(lambda _conn: None)

    async def close(self) -> None:
        def shut() -> None:
            for conn in (self._conn, self._watch):
                if conn is not None:
                    conn.close()
            self._conn = self._watch = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=False)

    def _guarded(self, fn: Callable[[sqlite3.Connection], T]) -> Callable[[], T]:
        def run() -> T:
            try:
                if self._conn is None:
                    self._open()
                assert self._conn is not None
                return fn(self._conn)
            except sqlite3.OperationalError as exc:
                raise TransportUnavailable(f"SQLite {self.path!r}: {exc}") from exc
            except sqlite3.Error as exc:
                raise TransportError(f"SQLite {self.path!r}: {exc}") from exc

        return run

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the database thread (no transaction of its own)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._guarded(fn))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` inside one short write transaction."""

        def tx(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self.call(tx)

    def _data_version(self, _conn: sqlite3.Connection) -> int:
        assert self._watch is not None
        row = self._watch.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    async def version(self) -> int:
        """A number that changes whenever any connection commits to the file."""
        return await self.call(self._data_version)

    async def changed_since(self, version: int, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for a commit after ``version``; returns the latest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            current = await self.version()
            if current != version or loop.time() >= deadline:
                return current
            await asyncio.sleep(min(POLL, max(0.0, deadline - loop.time())))
