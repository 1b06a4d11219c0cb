"""One SQLite database file, used from asyncio: the shared plumbing of the SQLite transport
and result store.

Statements from asyncio run on one dedicated thread, so the event loop never blocks on
disk or on another process's lock; a producer's plain thread may write on the same
connection itself (``write_now``), under the lock that keeps one user on it at a time.
Writes are short ``BEGIN IMMEDIATE`` transactions. Changes made by other processes are
noticed through ``PRAGMA data_version`` on a second connection (a cheap read of shared
memory). A waiter looks again when inotify reports a write to the file (Linux,
:mod:`hubbub._inotify`): low pickup latency and no CPU while idle. Elsewhere it polls, every
``POLL`` seconds at first and less often the longer nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar, cast
from urllib.parse import unquote, urlsplit

from hubbub._inotify import FileWatch, open_watch
from hubbub.errors import ConfigurationError, TransportError, TransportUnavailable

T = TypeVar("T")
log = logging.getLogger("hubbub.sqlite")
POLL = 0.002  # seconds between the first looks at data_version while waiting (no inotify)
POLL_MAX = 0.05  # seconds between looks after a long quiet spell (no inotify)
WATCHED_LOOK = 0.25  # seconds between looks with inotify: only a safety net for a lost event
# After a write is reported, the commit becomes visible a moment later (its frames are
# written before the WAL index says so): look again at these pauses before waiting long.
AFTER_WRITE = (0.0, 0.0005, 0.001, 0.002, 0.004)
# Commits on a process's connection between two checkpoints of the WAL into the file. Each
# commit writes two or more pages; SQLite's own automatic checkpoint comes every 1000.
CHECKPOINT_AFTER = 500
RESTART_AFTER = 4 * CHECKPOINT_AFTER  # commits between checkpoints on the committing thread
# While another process holds the write lock, a writer tries again after these pauses, then
# every BUSY_PAUSES[-1] seconds, for up to PATIENCE seconds. SQLite's own busy handler sleeps
# 1, 2, 5, 10 ms... between tries: a lock held for a tenth of a millisecond (a producer's
# insert, a worker's claim) then cost the other side 1, 3, 8 or 18 ms, the tail of the
# pickup latency.
BUSY_PAUSES = (0.0, 0.00005, 0.0001, 0.0002, 0.0005, 0.001)
PATIENCE = 30.0


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


class _Checkpointer:
    """Copies the WAL back into the database file, mostly on a thread and a connection of
    its own.

    SQLite's automatic checkpoint runs inside the commit that fills the WAL, and with
    ``synchronous=NORMAL`` it waits for two fsyncs (milliseconds each): a producer's
    ``delay()`` or the database thread's claim would stall on them every few hundred
    commits. Here the committing connection has it turned off, and every
    ``CHECKPOINT_AFTER`` commits a ``PASSIVE`` checkpoint (it waits for no reader and no
    writer) runs on this thread instead, with the same fsyncs: nothing about durability
    changes, only which thread waits for the disk.

    The WAL starts over only after a checkpoint that copied all of it, which one running
    beside busy writers never does: so every ``RESTART_AFTER`` commits the committing thread
    runs one itself, under the lock that holds this process's writers back (what SQLite's
    automatic checkpoint did every time). The WAL then stays within a few thousand commits.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.commits = 0  # since the last checkpoint began; counted under _Shared.lock
        self.unsettled = 0  # commits since the committing thread last ran a checkpoint
        self.closed = False
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._running: Future[None] | None = None

    def committed(self, conn: sqlite3.Connection) -> None:
        """Count one commit on ``conn`` (the caller holds ``_Shared.lock``); checkpoint if
        one is due."""
        self.commits += 1
        if self.commits < CHECKPOINT_AFTER or self.closed:
            return
        running = self._running
        if self.unsettled + self.commits >= RESTART_AFTER:
            self.unsettled = self.commits = 0
            if running is not None:
                wait([running])  # two checkpoints at once: the second would do nothing
            _checkpoint(conn, self.path)  # whole: the next commit starts the WAL over
            return
        if running is not None and not running.done():
            return  # the one under way copies these commits too
        self.unsettled += self.commits
        self.commits = 0
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="hubbub-checkpoint")
        self._running = self._thread.submit(self._run)

    def _run(self) -> None:
        if self.closed:
            return
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                             check_same_thread=False)
                self._conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:  # the next one tries again; the WAL only grows meanwhile
            log.debug("checkpoint of %s failed: %s", self.path, exc)
            return
        _checkpoint(self._conn, self.path)

    def close(self) -> None:
        """Stop after the checkpoint under way, if any (blocks until it ends)."""
        self.closed = True
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _checkpoint(conn: sqlite3.Connection, path: str) -> None:
    """A ``PASSIVE`` checkpoint on ``conn``; a failure is left to the next one."""
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
    except sqlite3.Error as exc:
        log.debug("checkpoint of %s failed: %s", path, exc)


class _Shared:
    """One file's connections and the thread they live on, shared within a process.

    The broker, the result store and the schedule store of one process often use one file:
    sharing the connection means their writes queue on one thread instead of contending for
    SQLite's write lock (whose busy handler sleeps for milliseconds).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="hubbub-sqlite")
        self.conn: sqlite3.Connection | None = None
        self.watch: sqlite3.Connection | None = None
        self.schemas: set[str] = set()
        self.users = 0
        # One user of the connections at a time: the database thread, or a producer's thread
        # in write_now (a transaction must not interleave with another thread's statements).
        self.lock = threading.Lock()
        self.shut_down = False  # closed for good: a late write_now must not open it again
        self.checkpoints = _Checkpointer(path)

    def ensure(self, schema: str) -> sqlite3.Connection:
        """The open connection with ``schema`` applied (its user holds ``lock``)."""
        if self.shut_down:
            raise TransportUnavailable(f"SQLite {self.path!r} was closed")
        if self.conn is None:
            parent = Path(self.path).parent
            if not parent.exists():
                raise TransportUnavailable(
                    f"SQLite folder {str(parent)!r} does not exist; create it"
                )
            # timeout=0: a write lock held by another process is waited for by _when_free.
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None,
                                   check_same_thread=False)
            # Switching a new file to WAL takes an exclusive lock and does not wait for it:
            # two processes opening the same new file at once must retry, not fail.
            _while_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # self.checkpoints does it
            self.conn = conn
            self.watch = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                         check_same_thread=False)
        if schema not in self.schemas:
            conn = self.conn
            _while_locked(lambda: conn.executescript(schema))
            self.schemas.add(schema)
        return self.conn

    def shut(self) -> None:
        with self.lock:
            for conn in (self.conn, self.watch):
                if conn is not None:
                    conn.close()
            self.conn = self.watch = None
            self.shut_down = True
        self.checkpoints.close()


def _while_locked(step: Callable[[], object], patience: float = 30.0) -> None:
    """Run ``step``, again while SQLite answers "database is locked" (up to ``patience`` s)."""
    deadline = time.monotonic() + patience
    pause = 0.01
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)  # on the database thread, never the event loop
        pause = min(pause * 2, 0.5)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` says another connection holds a lock SQLite would have waited for."""
    return exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


def _when_free(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T],
               exc: sqlite3.OperationalError) -> T:
    """``fn(conn)`` again after it failed with ``exc``, while another process holds the lock
    it needs (up to ``PATIENCE`` seconds, at short pauses: see ``BUSY_PAUSES``).

    Only a unit that left no transaction open is tried again: one that took no lock, or one
    that ``_transaction`` rolled back. Either wrote nothing, so trying again is safe.
    """
    deadline = time.monotonic() + PATIENCE
    tries = 0
    while _busy(exc) and not conn.in_transaction and time.monotonic() < deadline:
        time.sleep(BUSY_PAUSES[min(tries, len(BUSY_PAUSES) - 1)])  # never on the event loop
        tries += 1
        try:
            return fn(conn)
        except sqlite3.OperationalError as again:
            exc = again
    raise exc


def _commit(conn: sqlite3.Connection) -> None:
    """``COMMIT``. In WAL mode it waits for no lock; a file SQLite could not switch to WAL
    needs an exclusive one: then try again at ``BUSY_PAUSES``, and roll back if it never
    comes (or the commit failed otherwise)."""
    deadline = time.monotonic() + PATIENCE
    tries = 0
    while True:
        try:
            conn.execute("COMMIT")
            return
        except sqlite3.OperationalError as exc:
            if not conn.in_transaction:
                raise
            if not _busy(exc) or time.monotonic() > deadline:
                conn.execute("ROLLBACK")
                raise
        time.sleep(BUSY_PAUSES[min(tries, len(BUSY_PAUSES) - 1)])
        tries += 1


def _transaction(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """``fn`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back if it raises)."""

    def tx(conn: sqlite3.Connection) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        _commit(conn)
        return result

    return tx


def _insert_rows(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[object]]) -> None:
    """``sql`` once per row, atomically. A lone statement is a transaction of its own (a
    write statement takes the write lock as it starts, as ``BEGIN IMMEDIATE`` does, and
    commits as it ends): two fewer statements than ``_transaction`` on the hot path."""
    if len(rows) == 1:
        conn.execute(sql, rows[0]).close()
    else:
        _transaction(lambda c: c.executemany(sql, rows).close())(conn)


_SHARED: dict[tuple[str, int], _Shared] = {}
_SHARED_LOCK = threading.Lock()
# This process's id, kept current across fork: read on every write_now, where a getpid()
# system call per delay() is worth saving.
_PROCESS = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PROCESS.__setitem__(0, os.getpid()))


class SQLiteFile:
    """A view of one database file with its own schema, on the process's shared connection."""

    def __init__(self, url: str, schema: str) -> None:
        self.path = sqlite_path(url)
        self.schema = schema
        self._key = os.path.abspath(self.path)
        self._shared: _Shared | None = None
        self._pid = 0
        self._watch: FileWatch | None = None
        self._watch_tried: asyncio.AbstractEventLoop | None = None

    def _attach(self) -> _Shared:
        if self._shared is None or self._pid != os.getpid():
            key = (self._key, os.getpid())
            with _SHARED_LOCK:
                shared = _SHARED.get(key)
                if shared is None:
                    shared = _SHARED[key] = _Shared(self.path)
                shared.users += 1
            self._shared, self._pid = shared, os.getpid()
        return self._shared

    def same_file(self, other: SQLiteFile) -> bool:
        """Whether ``other`` views this file: then, in one process, both write on one
        connection, and one transaction may hold writes of both."""
        return self._key == other._key

    async def open(self) -> None:
        await self.call(lambda _conn: None)

    async def close(self) -> None:
        watch, self._watch, self._watch_tried = self._watch, None, None
        if watch is not None:
            watch.close()
        shared, self._shared = self._shared, None
        if shared is None or self._pid != os.getpid():
            return
        with _SHARED_LOCK:
            shared.users -= 1
            last = shared.users == 0
            if last:
                _SHARED.pop((self._key, self._pid), None)
        if last:
            await asyncio.get_running_loop().run_in_executor(shared.executor, shared.shut)
            shared.executor.shutdown(wait=False)

    def _guarded(self, shared: _Shared, fn: Callable[[sqlite3.Connection], T]) -> Callable[[], T]:
        def run() -> T:
            try:
                with shared.lock:
                    conn = shared.ensure(self.schema)
                    try:
                        result = fn(conn)
                    except sqlite3.OperationalError as exc:
                        result = _when_free(conn, fn, exc)
                    shared.checkpoints.committed(conn)  # a read counts too: it is cheap
                    if isinstance(result, sqlite3.Cursor):
                        # A cursor must die here, under the lock. Dropped on the event loop, it
                        # resets its cached statement there, while this thread may be running
                        # that very statement for another user of the shared connection ("bad
                        # parameter or other API misuse").
                        result.close()
                        return cast("T", None)
                    return result
            except sqlite3.OperationalError as exc:
                raise TransportUnavailable(f"SQLite {self.path!r}: {exc}") from exc
            except sqlite3.Error as exc:
                raise TransportError(f"SQLite {self.path!r}: {exc}") from exc

        return run

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the database thread (no transaction of its own)."""
        shared = self._attach()
        return await asyncio.get_running_loop().run_in_executor(shared.executor,
                                                                self._guarded(shared, fn))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` inside one short write transaction."""
        return await self.call(_transaction(fn))

    def write_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``write``, on the calling thread: for a producer's plain thread, which then waits
        for no event loop and no database thread. It blocks while another thread of this
        process uses the connection, and on another process's write lock like ``write``.

        Raises:
            TransportUnavailable: the file was closed (or opened by the parent of this
                forked process), or SQLite cannot write it now.
            TransportError: SQLite refused the statements.
        """
        shared = self._shared
        if shared is None or self._pid != os.getpid():
            raise TransportUnavailable(f"SQLite {self.path!r} is not open in this process")
        return self._guarded(shared, _transaction(fn))()

    def insert_now(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run ``sql`` once per row of ``rows`` on the calling thread, all committed before
        it returns (``write_now`` for the producer's hot path: one statement and one row, no
        closures).

        Raises:
            As ``write_now``.
        """
        shared = self._shared
        if shared is None or self._pid != _PROCESS[0]:
            raise TransportUnavailable(f"SQLite {self.path!r} is not open in this process")
        try:
            with shared.lock:
                conn = shared.ensure(self.schema)
                try:
                    _insert_rows(conn, sql, rows)
                except sqlite3.OperationalError as exc:
                    _when_free(conn, lambda c: _insert_rows(c, sql, rows), exc)
                shared.checkpoints.committed(conn)
        except sqlite3.OperationalError as exc:
            raise TransportUnavailable(f"SQLite {self.path!r}: {exc}") from exc
        except sqlite3.Error as exc:
            raise TransportError(f"SQLite {self.path!r}: {exc}") from exc

    async def insert(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """``insert_now`` on the database thread."""
        await self.call(lambda conn: _insert_rows(conn, sql, rows))

    def _data_version(self, _conn: sqlite3.Connection) -> int:
        assert self._shared is not None
        assert self._shared.watch is not None
        row = self._shared.watch.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    async def version(self) -> int:
        """A number that changes whenever any connection commits to the file."""
        return await self.call(self._data_version)

    def _watcher(self) -> FileWatch | None:
        """The inotify watch of this file for the running loop, opened on first use; None
        where there is none (then waiters poll)."""
        loop = asyncio.get_running_loop()
        if self._watch is not None and self._watch.loop is loop:
            return self._watch
        if self._watch_tried is loop or self._watch is not None:
            return None  # none here, or it belongs to another loop: poll on this one
        self._watch_tried = loop
        self._watch = open_watch(self.path)
        return self._watch

    async def changed_since(self, version: int, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for a commit after ``version``; returns the latest."""
        current, _ = await self._after_commit(version, timeout, None)
        return current

    async def write_after_commit(
        self, version: int | None, timeout: float,
        fn: Callable[[sqlite3.Connection, int], T],
        probe: Callable[[sqlite3.Connection], T | None] | None = None,
    ) -> tuple[int, T | None]:
        """Wait up to ``timeout`` seconds for a commit after ``version`` (None: go at once),
        then run ``fn(connection, seen)`` in a write transaction, in the same trip to the
        database thread as the look that saw the commit. ``seen`` is the version read inside
        that transaction: a later commit by any other connection changes it.

        ``probe``, if given, runs first, outside any transaction (a read takes no lock): what
        it returns other than None is the answer, and ``fn`` does not run. A worker's own
        commits wake its waits too; a probe that finds nothing to claim then keeps the write
        lock, which the producers want, free.

        Returns:
            The latest version seen and what ``probe`` or ``fn`` returned, or None when no
            commit came within ``timeout`` (neither ran).
        """
        return await self._after_commit(version, timeout, fn, probe)

    def _look(self, version: int | None, fn: Callable[[sqlite3.Connection, int], T] | None,
              probe: Callable[[sqlite3.Connection], T | None] | None = None,
              ) -> Callable[[sqlite3.Connection], tuple[int, T | None, bool]]:
        """On the database thread: (latest version, fn's result, whether it changed)."""

        def look(conn: sqlite3.Connection) -> tuple[int, T | None, bool]:
            current = self._data_version(conn)
            if current == version:
                return current, None, False
            if fn is None:
                return current, None, True
            if probe is not None:
                # Read after ``current``: a commit it missed changes the version again.
                answer = probe(conn)
                if answer is not None:
                    return current, answer, True
            seen: list[int] = []

            def run(conn: sqlite3.Connection) -> T:
                # Under the write lock nobody else commits: this is what fn will see.
                seen.append(self._data_version(conn))
                return fn(conn, seen[0])

            result = _transaction(run)(conn)
            return seen[0], result, True

        return look

    async def _after_commit(
        self, version: int | None, timeout: float,
        fn: Callable[[sqlite3.Connection, int], T] | None,
        probe: Callable[[sqlite3.Connection], T | None] | None = None,
    ) -> tuple[int, T | None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        watch = self._watcher()
        # A write just before the watch was armed may not be visible at the first look yet.
        pause, rechecks = POLL, len(AFTER_WRITE) - 2
        while True:
            if watch is not None:
                watch.arm()  # before the look: a commit after it wakes the wait below
            current, result, changed = await self.call(self._look(version, fn, probe))
            left = deadline - loop.time()
            if changed or left <= 0:
                return current, result
            if watch is None:
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 1.5, POLL_MAX)  # quiet for longer: look less often
            else:
                # Right after a write, look again soon (it may not have been visible yet);
                # then wait long. Either pause ends early at the next write.
                quick = rechecks < len(AFTER_WRITE)
                nap = AFTER_WRITE[rechecks] if quick else WATCHED_LOOK
                rechecks = 0 if await watch.wait(min(nap, left)) else rechecks + quick

