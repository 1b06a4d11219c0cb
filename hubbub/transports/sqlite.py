"""The embedded default broker: one SQLite file in WAL mode, ``sqlite:///hubbub.db``.

Correct with several producer and worker processes on one machine. A row's ``visible_at``
is when it may next be handed out: its ETA while delayed, its lease deadline while leased,
0 when it was published due at once (which keeps it out of the index of later rows, so that
a publish writes the table and one index). ``seq`` is a plain rowid, one past the largest:
FIFO among the rows there are, and a receipt's random ``token`` tells a reused number apart.
Claiming sets a fresh ``token``; ack, release, extend and dead-letter only touch a row whose
token still matches, so a worker whose lease ran out cannot disturb the next holder.

Rows written by other tools are read defensively: columns are CAST to the type hubbub
writes (a text body becomes its bytes, an id that is not UTF-8 is escaped, a priority or
``visible_at`` that is not a number counts as 0 / due now), so one odd row is handed out
and dead-lettered by the worker instead of failing every claim.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from hubbub._sqlite import SQLiteFile
from hubbub._text import cap, clean_text
from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.transports._dead import DeadFilter, retention_of
from hubbub.transports._dead import dropped as log_dropped
from hubbub.transports._safe import bytes_of, check_queue, count_of, due_at, text_of
from hubbub.transports.base import (
    Capabilities,
    DeadLetter,
    DeadLetterRequest,
    Delivery,
    Outgoing,
    QueueStats,
    SyncPublisher,
    Transport,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS hubbub_messages (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL,
    queue      TEXT NOT NULL,
    priority   INTEGER NOT NULL,
    body       BLOB NOT NULL,
    visible_at REAL NOT NULL,
    token      TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS hubbub_messages_order ON hubbub_messages (queue, priority DESC, seq);
CREATE INDEX IF NOT EXISTS hubbub_messages_later ON hubbub_messages (queue, visible_at)
    WHERE visible_at > 0;
DROP INDEX IF EXISTS hubbub_messages_due;
CREATE TABLE IF NOT EXISTS hubbub_dead (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT NOT NULL,
    queue    TEXT NOT NULL,
    priority INTEGER NOT NULL,
    body     BLOB NOT NULL,
    reason   TEXT NOT NULL,
    died_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS hubbub_dead_id ON hubbub_dead (id);
CREATE INDEX IF NOT EXISTS hubbub_dead_order ON hubbub_dead (queue, seq);
CREATE INDEX IF NOT EXISTS hubbub_dead_died ON hubbub_dead (died_at);
"""
_CHUNK = 500  # ids per statement, rows per purge transaction

# A row is due when its visible_at has come, or is not a number at all (another tool wrote
# it): such a row is handed out, and its claim writes a real deadline.
_DUE = "(visible_at <= ? OR typeof(visible_at) NOT IN ('real', 'integer'))"
_NUMERIC = "typeof(visible_at) IN ('real', 'integer')"


_INSERT = ("INSERT INTO hubbub_messages (id, queue, priority, body, visible_at)"
           " VALUES (?, ?, ?, ?, ?)")


def _rows(items: Sequence[Outgoing], now: float) -> list[tuple[str, str, int, bytes, float]]:
    """The rows that publish ``items`` (checked here, before anything is written). A message
    due at once gets ``visible_at`` 0, which keeps it out of the index of later rows: its
    insert then writes two b-trees, not three."""
    rows = []
    for i in items:
        queue, id_ = i.queue, i.id
        if not (type(queue) is str and queue.isascii() and queue):  # else the careful check
            check_queue(i)
        if not (type(id_) is str and id_.isascii()):
            id_ = clean_text(id_)
        rows.append((id_, queue, i.priority, i.body,
                     0.0 if i.eta is None else due_at(i.eta, now) or 0.0))
    return rows


# Leases the rows whose seq is IN (...), and hands back what a Delivery is made of.
_LEASE = ("UPDATE hubbub_messages SET token = ?, visible_at = ?,"
          " attempts = CAST(attempts AS INTEGER) + 1 WHERE seq")
_LEASED = (" RETURNING seq, CAST(id AS BLOB), CAST(queue AS BLOB), CAST(priority AS INTEGER),"
           " CAST(body AS BLOB), attempts")
_CLAIM_ONE = (_LEASE + " IN (SELECT seq FROM hubbub_messages"  # noqa: S608
              " INDEXED BY hubbub_messages_order"
              f" WHERE queue = ? AND {_DUE} ORDER BY priority DESC, seq LIMIT ?)" + _LEASED)

_ACK = "DELETE FROM hubbub_messages WHERE seq = ? AND token = ?"

_ANY_DUE = ("SELECT 1 FROM hubbub_messages INDEXED BY hubbub_messages_order"  # noqa: S608
            f" WHERE queue = ? AND {_DUE} LIMIT 1")


def _delivery(row: tuple[Any, ...], token: str, until: float) -> Delivery:
    """A claimed row as a Delivery. The CASTs make id, queue and body bytes (the first two
    hubbub's own UTF-8, read here as _safe.text_of would) and attempts a number; a row some
    other tool wrote with odd values takes the careful path."""
    seq, id_, queue, priority, body, attempts = row
    if type(id_) is bytes and type(queue) is bytes and type(body) is bytes and (
            type(attempts) is int and 0 <= attempts < 1 << 31):
        return Delivery(queue.decode("utf-8", "backslashreplace"), body,
                        id_.decode("utf-8", "backslashreplace"), attempts, priority,
                        receipt=(seq, token), lease_until=until)
    return Delivery(text_of(queue), bytes_of(body), text_of(id_, f"sqlite-{seq}"),
                    count_of(attempts, 1), priority, receipt=(seq, token), lease_until=until)


class _SQLiteSyncPublisher(SyncPublisher):
    """The transport's ``publish`` on the calling thread: the same rows, committed before it
    returns (``SQLiteFile.insert_now``)."""

    def __init__(self, transport: SQLiteTransport) -> None:
        self._transport = transport

    def publish(self, items: Sequence[Outgoing]) -> None:
        if items:
            transport = self._transport
            transport.db.insert_now(_INSERT, _rows(items, transport.clock.time()))


class SQLiteTransport(Transport):
    """Messages as rows; a claim is one short write transaction for a whole batch."""

    capabilities: Capabilities = Capabilities()

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK, dead_ttl: float | None = None,
                 dead_max: int | None = None) -> None:
        self.url, self.retention = retention_of(url, dead_ttl, dead_max)
        self.clock = clock
        self.db = SQLiteFile(self.url, SCHEMA)
        self._sync_publisher = _SQLiteSyncPublisher(self)

    async def connect(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def publish(self, items: Sequence[Outgoing]) -> None:
        if items:
            await self.db.insert(_INSERT, _rows(items, self.clock.time()))

    def sync_publisher(self) -> SyncPublisher:
        """Inserts on the calling thread, on the process's shared connection."""
        return self._sync_publisher  # one for good: a sender asks for it on every send

    def _claim(
        self, conn: sqlite3.Connection, queues: Sequence[str], limit: int, lease: float
    ) -> list[Delivery]:
        now = self.clock.time()
        token = os.urandom(16).hex()
        until = now + lease
        names = list(dict.fromkeys(queues))
        if len(names) == 1:
            # One queue: choose and lease in one statement (SQLite runs the IN subquery to
            # the end before it updates a row).
            rows = conn.execute(_CLAIM_ONE, (token, until, names[0], now, limit)).fetchall()
        else:
            candidates: list[tuple[int, int]] = []
            for queue in names:
                # Walk the queue in delivery order; leased/delayed rows fail the filter.
                candidates.extend((-p, s) for p, s in conn.execute(
                    "SELECT CAST(priority AS INTEGER), seq FROM hubbub_messages"  # noqa: S608
                    f" INDEXED BY hubbub_messages_order WHERE queue = ? AND {_DUE}"
                    " ORDER BY priority DESC, seq LIMIT ?",
                    (queue, now, limit),
                ).fetchall())
            chosen = [seq for _, seq in heapq.nsmallest(limit, candidates)]
            if not chosen:
                return []
            rows = conn.execute(
                _LEASE + f" IN ({','.join('?' * len(chosen))})" + _LEASED,
                (token, until, *chosen),
            ).fetchall()
        rows.sort(key=lambda r: (-r[3], r[0]))
        return [_delivery(row, token, until) for row in rows]

    def _next_due(self, conn: sqlite3.Connection, queues: Sequence[str]) -> float | None:
        marks = ",".join("?" * len(queues))
        row = conn.execute(
            f"SELECT MIN(visible_at) FROM hubbub_messages WHERE queue IN ({marks})"  # noqa: S608
            f" AND visible_at > 0 AND {_NUMERIC}",  # rows due at once have 0 (see _rows)
            tuple(queues),
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def _claim_or_due(self, conn: sqlite3.Connection, queues: Sequence[str], limit: int,
                      lease: float) -> tuple[list[Delivery], float | None]:
        """One claim; when it got nothing, when the next delayed or leased row comes due."""
        got = self._claim(conn, queues, limit, lease)
        return got, (None if got else self._next_due(conn, queues))

    def _nothing_due(self, conn: sqlite3.Connection, queues: Sequence[str]
                     ) -> tuple[list[Delivery], float | None] | None:
        """What ``_claim_or_due`` would return when no row is due (no write lock taken), or
        None when one may be: then the claim runs."""
        now = self.clock.time()
        for queue in dict.fromkeys(queues):
            if conn.execute(_ANY_DUE, (queue, now)).fetchone() is not None:
                return None
        return [], self._next_due(conn, queues)

    async def fetch(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        version: int | None = None  # None: claim at once; then only after a commit
        wake_at = deadline
        while True:
            # The look at data_version and the claim it leads to share one trip to the
            # database thread: a commit is picked up with one hop, not two.
            version, result = await self.db.write_after_commit(
                version, max(0.0, wake_at - loop.time()),
                lambda c, _seen: self._claim_or_due(c, queues, limit, lease),
                lambda c: self._nothing_due(c, queues))
            if result is None:  # no commit until wake_at: a delayed row may be due now
                version = None
                if loop.time() >= deadline:
                    return []
                wake_at = deadline
                continue
            got, due = result
            if got or loop.time() >= deadline:
                return got
            wake_at = deadline if due is None else min(deadline, loop.time() + max(
                0.0, due - self.clock.time()))

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            await self.db.write(lambda c: self.ack_in(c, deliveries))

    def ack_in(self, conn: sqlite3.Connection, deliveries: Sequence[Delivery]) -> None:
        """``ack``'s statement on ``conn``, inside the caller's write transaction: the result
        store on the same file commits a flush's records and the acks that follow them at
        once (``SQLiteResults.store_and_ack``)."""
        conn.executemany(_ACK, [d.receipt for d in deliveries]).close()

    async def release(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        if deliveries:
            at = self.clock.time() + delay
            rows = [(at, *d.receipt) for d in deliveries]
            await self.db.write(
                lambda c: c.executemany(
                    "UPDATE hubbub_messages SET token = NULL, visible_at = ?,"
                    " attempts = MAX(attempts - 1, 0) WHERE seq = ? AND token = ?",
                    rows,
                )
            )

    async def dead_letter(self, requests: Sequence[DeadLetterRequest]) -> None:
        if not requests:
            return
        now = self.clock.time()

        def move(conn: sqlite3.Connection) -> tuple[dict[str, int], dict[str, int]]:
            for r in requests:
                seq, token = r.delivery.receipt
                conn.execute(
                    "INSERT INTO hubbub_dead (id, queue, priority, body, reason, died_at)"
                    " SELECT id, queue, CAST(priority AS INTEGER), CAST(body AS BLOB), ?, ?"
                    " FROM hubbub_messages WHERE seq = ? AND token = ?",
                    (cap(r.reason), now, seq, token),
                )
                conn.execute(
                    "DELETE FROM hubbub_messages WHERE seq = ? AND token = ?", (seq, token)
                )
            return self._prune(conn, {r.delivery.queue for r in requests}, now)

        expired, over = await self.db.write(move)
        for queue in sorted(set(expired) | set(over)):
            log_dropped(queue, over.get(queue, 0),
                        f"over the cap of {self.retention.limit}, oldest first")
            log_dropped(queue, expired.get(queue, 0),
                        f"older than the retention of {self.retention.ttl:g}s")

    def _prune(self, conn: sqlite3.Connection, queues: set[str], now: float
               ) -> tuple[dict[str, int], dict[str, int]]:
        """Drop expired dead letters, then the oldest of ``queues`` past the cap.

        Cheap enough for every write: the expiry is a range of the ``died_at`` index (empty
        most of the time), and a queue is counted only when the span of its ``seq`` numbers
        (two index look-ups) says it may hold more than the cap.

        Returns:
            How many were dropped per queue: expired, over the cap.
        """
        expired: dict[str, int] = {}
        for (queue,) in conn.execute("DELETE FROM hubbub_dead WHERE died_at < ?"
                                     " RETURNING CAST(queue AS BLOB)",
                                     (self.retention.cutoff(now),)).fetchall():
            name = text_of(queue)
            expired[name] = expired.get(name, 0) + 1
        over: dict[str, int] = {}
        limit = self.retention.limit
        for queue in queues:
            ends = [conn.execute("SELECT seq FROM hubbub_dead INDEXED BY hubbub_dead_order"  # noqa: S608
                                 f" WHERE queue = ? ORDER BY seq {way} LIMIT 1",
                                 (queue,)).fetchone() for way in ("ASC", "DESC")]
            if ends[0] is None or ends[1][0] - ends[0][0] < limit:
                continue  # fewer rows than the span of their seq numbers: within the cap
            row = conn.execute("SELECT seq FROM hubbub_dead INDEXED BY hubbub_dead_order"
                               " WHERE queue = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
                               (queue, limit)).fetchone()
            if row is not None:
                over[queue] = conn.execute("DELETE FROM hubbub_dead WHERE queue = ? AND seq <= ?",
                                           (queue, row[0])).rowcount
        return expired, over

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        if not deliveries:
            return []
        now = self.clock.time()
        until = now + lease

        def renew(conn: sqlite3.Connection) -> list[Delivery]:
            lost = []
            for d in deliveries:
                seq, token = d.receipt
                cur = conn.execute(
                    "UPDATE hubbub_messages SET visible_at = ?"
                    " WHERE seq = ? AND token = ? AND visible_at >= ?",
                    (until, seq, token, now),
                )
                if cur.rowcount:
                    d.lease_until = until
                else:
                    lost.append(d)
            return lost

        return await self.db.write(renew)

    async def purge(self, queue: str) -> int:
        now = self.clock.time()
        return await self.db.write(
            lambda c: c.execute(
                "DELETE FROM hubbub_messages WHERE queue = ?"
                " AND (token IS NULL OR visible_at <= ?)",
                (queue, now),
            ).rowcount
        )

    async def make_due(self) -> int:
        """Make every delayed (not leased) message due now; how many were delayed.

        A testing aid (``hubbub.testing``'s ``fast_forward``): an ETA or a retry's countdown
        is then not waited for in real time.
        """
        now = self.clock.time()
        return await self.db.write(
            lambda c: c.execute(
                f"UPDATE hubbub_messages SET visible_at = ? WHERE token IS NULL"  # noqa: S608
                f" AND visible_at > ? AND {_NUMERIC}",
                (now, now),
            ).rowcount
        )

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        now = self.clock.time()

        def count(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for queue, ready, delayed, leased in conn.execute(
                f"SELECT CAST(queue AS BLOB), SUM({_DUE}),"  # noqa: S608
                f" SUM(visible_at > ? AND {_NUMERIC} AND token IS NULL),"
                f" SUM(visible_at > ? AND {_NUMERIC} AND token IS NOT NULL)"
                " FROM hubbub_messages GROUP BY queue",
                (now, now, now),
            ):
                out[text_of(queue)] = {"ready": ready, "delayed": delayed, "leased": leased}
            for queue, dead in conn.execute(
                "SELECT CAST(queue AS BLOB), COUNT(*) FROM hubbub_dead GROUP BY queue"
            ):
                out.setdefault(text_of(queue), {})["dead"] = dead
            return out

        counts = await self.db.call(count)
        names = sorted(counts) if queues is None else list(queues)
        return [QueueStats(q, **counts.get(q, {})) for q in names]

    async def list_dead(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        # died_at < cutoff is exactly what _prune deletes: nothing past the retention shows
        sql = ("SELECT CAST(id AS BLOB), CAST(queue AS BLOB), CAST(body AS BLOB),"
               " CAST(reason AS BLOB), CAST(died_at AS REAL) FROM hubbub_dead"
               " WHERE NOT died_at < ?")
        params: tuple[Any, ...] = (self.retention.cutoff(self.clock.time()), limit)
        if queue is not None:
            sql += " AND queue = ?"
            params = (params[0], queue, limit)
        rows = await self.db.call(lambda c: c.execute(sql + " ORDER BY seq LIMIT ?", params)
                                  .fetchall())
        return [DeadLetter(text_of(i), text_of(q), bytes_of(b), text_of(r), t)
                for i, q, b, r, t in rows]

    async def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        now = self.clock.time()
        where = ""
        params: tuple[str, ...] = ()
        if ids is not None:
            if not ids:
                return 0
            where = f" WHERE id IN ({','.join('?' * len(ids))})"
            params = tuple(map(clean_text, ids))

        def move(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO hubbub_messages (id, queue, priority, body, visible_at)"  # noqa: S608
                f" SELECT id, queue, priority, body, ? FROM hubbub_dead{where} ORDER BY seq",
                (now, *params),
            )
            return conn.execute(f"DELETE FROM hubbub_dead{where}", params).rowcount  # noqa: S608

        return await self.db.write(move)

    async def delete_dead(self, ids: Sequence[str]) -> int:
        wanted = list(dict.fromkeys(map(clean_text, ids)))
        total = 0
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            total += await self.db.write(lambda c, chunk=chunk: c.execute(  # type: ignore[misc]
                f"DELETE FROM hubbub_dead WHERE id IN ({','.join('?' * len(chunk))})",  # noqa: S608
                chunk).rowcount)
        return total

    async def purge_dead(self, *, older_than: float | None = None, task: str | None = None,
                         queue: str | None = None) -> int:
        match = DeadFilter(older_than, task, queue)
        now = self.clock.time()
        where, params = ["1"], list[Any]()
        if queue is not None:
            where.append("queue = ?")
            params.append(queue)
        before = match.before(now)
        if before is not None:
            where.append("died_at <= ?")
            params.append(before)
        sql_where = " AND ".join(where)
        if task is None:
            return await self.db.write(lambda c: c.execute(
                f"DELETE FROM hubbub_dead WHERE {sql_where}", params).rowcount)  # noqa: S608
        # The task is in the body: read a chunk, match it here, delete what matched. One
        # short transaction per chunk, so that workers are not kept waiting by a long purge.
        total, last = 0, -1
        while True:
            rows = await self.db.call(lambda c, last=last: c.execute(  # type: ignore[misc]
                "SELECT seq, CAST(body AS BLOB) FROM hubbub_dead"  # noqa: S608
                f" WHERE {sql_where} AND seq > ? ORDER BY seq LIMIT ?",
                (*params, last, _CHUNK)).fetchall())
            if not rows:
                return total
            last = rows[-1][0]
            doomed = [seq for seq, body in rows if match.names_task(body)]
            if doomed:
                total += await self.db.write(lambda c, doomed=doomed: c.execute(  # type: ignore[misc]
                    f"DELETE FROM hubbub_dead WHERE seq IN ({','.join('?' * len(doomed))})",  # noqa: S608
                    doomed).rowcount)
