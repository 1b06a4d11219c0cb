"""The plane in SQLite: one table, ``hubbub_plane``, in a file of its own next to the broker's
(or result store's): ``shop.db`` keeps its plane in ``shop.db-plane`` (:func:`plane_path`).
Every reader and writer derives that name from the same URL, so they meet there; and the
plane's writes (a busy worker's event batches) go through their own connection, thread and
write lock, never queueing behind, or holding up, the broker's claims and acks.

Publishing inserts a batch in one short write transaction and trims the channel to its
newest ``maxlen`` rows in the same transaction; a message over 1 KiB (a busy worker's event
batch) is stored compressed with zlib (``zipped = 1``). A subscription remembers the newest id when
it opened and, while a read waits, looks for higher ids of its channel (an index seek) when
the plane's file has changed: it waits as :meth:`hubbub._sqlite.SQLiteFile.changed_since`
does, asleep on an inotify watch of the file on Linux (with a look at the file's
``data_version`` every 0.25 s as a safety net), elsewhere looking at it every 2 to 50 ms.
A quiet plane thus costs a waiting reader a few cheap looks a second, and a command wakes it
at once. On a busy plane (other channels' writes, such as the event batches of workers run
with ``-E``), a look that found nothing is followed by the next no sooner than ``GAP``
later: at most about as many looks as a poll every ``GAP`` took. A plane nobody reads costs
nothing but the publishers' inserts.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import zlib
from collections.abc import Sequence
from urllib.parse import quote

from hubbub._sqlite import SQLiteFile, sqlite_path
from hubbub.control.plane import MAXLEN, Plane, Subscription

__all__ = ["SUFFIX", "SQLitePlane", "plane_path"]

GAP = 0.05  # seconds at least between two looks at a channel that found nothing new
ZIP_OVER = 1024  # bytes past which a message is stored compressed
SUFFIX = "-plane"  # the plane's file is the broker's file name with this added

SCHEMA = """
CREATE TABLE IF NOT EXISTS hubbub_plane (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    body    BLOB NOT NULL,
    time    REAL NOT NULL,
    zipped  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS hubbub_plane_channel ON hubbub_plane (channel, id);
"""


def plane_path(url: str) -> str:
    """The file that keeps the plane of the broker (or result store) at ``url``: its file's
    path with ``-plane`` added (``sqlite:///shop.db`` -> ``shop.db-plane``).

    Raises:
        ConfigurationError: the URL names no file.
    """
    return sqlite_path(url) + SUFFIX  # the query (the broker's options) is not ours


class SQLitePlane(Plane):
    """Channels as rows of one table, rotated to ``maxlen`` rows per channel, in the file
    :func:`plane_path` names for ``url``.

    Args:
        url: a ``sqlite:///`` URL, as the broker or result store takes it.
        maxlen: rows a channel keeps.

    Raises:
        ConfigurationError: the URL names no file.
    """

    def __init__(self, url: str, maxlen: int = MAXLEN) -> None:
        super().__init__(maxlen)
        self.db = SQLiteFile("sqlite:///" + quote(plane_path(url)), SCHEMA)

    def __repr__(self) -> str:
        return f"SQLitePlane({self.db.path!r})"

    async def connect(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def publish(self, channel: str, messages: Sequence[bytes]) -> None:
        if not messages:
            return
        now = time.time()
        keep = self.maxlen

        def insert(conn: sqlite3.Connection) -> None:
            # Compressed here, on the plane's database thread (zlib lets go of the GIL): a
            # busy worker's event batches shrink about sevenfold, and so do the file's writes.
            rows = [(channel, zlib.compress(m, 1), now, 1) if len(m) > ZIP_OVER
                    else (channel, bytes(m), now, 0) for m in messages]
            conn.executemany("INSERT INTO hubbub_plane (channel, body, time, zipped)"
                             " VALUES (?, ?, ?, ?)", rows)
            # The id of the newest row past the bound, if any: it and older ones go.
            cut = conn.execute(
                "SELECT id FROM hubbub_plane WHERE channel = ? ORDER BY id DESC"
                " LIMIT 1 OFFSET ?", (channel, keep)).fetchone()
            if cut is not None:
                conn.execute("DELETE FROM hubbub_plane WHERE channel = ? AND id <= ?",
                             (channel, cut[0]))

        await self.db.write(insert)

    async def subscribe(self, channel: str) -> Subscription:
        def newest(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT MAX(id) FROM hubbub_plane WHERE channel = ?",
                               (channel,)).fetchone()
            return int(row[0] or 0)

        # An id is never reused (AUTOINCREMENT), so "above the newest" is "from now on".
        return _SQLiteSubscription(self, channel, await self.db.call(newest))


def _body(body: object, zipped: object) -> bytes | None:
    """A row's message; None for one that is not (another tool wrote it, or it is broken).
    A body written as text is still a message."""
    if isinstance(body, str):
        body = body.encode()
    if not isinstance(body, bytes):
        return None
    if zipped != 1:
        return body
    try:
        return zlib.decompress(body)
    except zlib.error:
        return None


class _SQLiteSubscription(Subscription):
    def __init__(self, plane: SQLitePlane, channel: str, last: int) -> None:
        self._plane = plane
        self._channel = channel
        self._last = last
        self._closed = False

    def _newer(self, conn: sqlite3.Connection) -> list[tuple[int, bytes | None]]:
        rows = conn.execute(
            "SELECT id, body, zipped FROM hubbub_plane WHERE channel = ? AND id > ?"
            " ORDER BY id", (self._channel, self._last)).fetchall()
        return [(row_id, _body(body, zipped)) for row_id, body, zipped in rows]

    async def read(self, wait: float) -> list[bytes]:
        if self._closed:
            raise RuntimeError("read from a closed subscription")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait, 0.0)
        db = self._plane.db
        version = await db.version()  # before the look: a commit after it ends the wait
        while True:
            looked = loop.time()
            rows = await db.call(self._newer)
            if rows:
                self._last = rows[-1][0]
                return [body for _, body in rows if body is not None]
            if loop.time() >= deadline:
                return []
            version = await db.changed_since(version, deadline - loop.time())
            # Woken by a commit (or at the deadline): the next look comes no sooner than GAP
            # after this one, so that other channels' writes do not send this reader to its
            # table at every commit. ``version`` was read before the next look: a commit in
            # between still ends the next wait.
            await asyncio.sleep(max(0.0, min(looked + GAP, deadline) - loop.time()))

    async def close(self) -> None:
        self._closed = True
