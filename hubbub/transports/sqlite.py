"""The embedded default broker: one SQLite file in WAL mode, ``sqlite:///hubbub.db``.

Correct with several producer and worker processes on one machine. A row's ``visible_at``
is when it may next be handed out: its ETA while delayed, its lease deadline while leased.
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
import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

from hubbub._sqlite import SQLiteFile
from hubbub._text import cap, clean_text
from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.transports._safe import bytes_of, check_queue, count_of, due_at, text_of
from hubbub.transports.base import (
    Capabilities,
    DeadLetter,
    DeadLetterRequest,
    Delivery,
    Outgoing,
    QueueStats,
    Transport,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS hubbub_messages (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL,
    queue      TEXT NOT NULL,
    priority   INTEGER NOT NULL,
    body       BLOB NOT NULL,
    visible_at REAL NOT NULL,
    token      TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS hubbub_messages_order ON hubbub_messages (queue, priority DESC, seq);
CREATE INDEX IF NOT EXISTS hubbub_messages_due ON hubbub_messages (queue, visible_at);
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
"""

# A row is due when its visible_at has come, or is not a number at all (another tool wrote
# it): such a row is handed out, and its claim writes a real deadline.
_DUE = "(visible_at <= ? OR typeof(visible_at) NOT IN ('real', 'integer'))"
_NUMERIC = "typeof(visible_at) IN ('real', 'integer')"


class SQLiteTransport(Transport):
    """Messages as rows; a claim is one short write transaction for a whole batch."""

    capabilities: Capabilities = Capabilities()

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.url = url
        self.clock = clock
        self.db = SQLiteFile(url, SCHEMA)

    async def connect(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def publish(self, items: Sequence[Outgoing]) -> None:
        if not items:
            return
        now = self.clock.time()
        rows = []
        for i in items:
            check_queue(i)
            rows.append((clean_text(i.id), i.queue, i.priority, i.body,
                         due_at(i.eta, now) or now))
        await self.db.write(
            lambda c: c.executemany(
                "INSERT INTO hubbub_messages (id, queue, priority, body, visible_at)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        )

    def _claim(
        self, conn: sqlite3.Connection, queues: Sequence[str], limit: int, lease: float
    ) -> list[Delivery]:
        now = self.clock.time()
        candidates: list[tuple[int, int]] = []
        for queue in dict.fromkeys(queues):
            # Walk the queue in delivery order; leased/delayed rows are skipped by the filter.
            rows = conn.execute(
                "SELECT CAST(priority AS INTEGER), seq FROM hubbub_messages"  # noqa: S608
                f" INDEXED BY hubbub_messages_order WHERE queue = ? AND {_DUE}"
                " ORDER BY priority DESC, seq LIMIT ?",
                (queue, now, limit),
            ).fetchall()
            candidates.extend((-p, s) for p, s in rows)
        chosen = [seq for _, seq in heapq.nsmallest(limit, candidates)]
        if not chosen:
            return []
        token = uuid.uuid4().hex
        until = now + lease
        marks = ",".join("?" * len(chosen))
        rows = conn.execute(
            "UPDATE hubbub_messages SET token = ?, visible_at = ?,"  # noqa: S608
            " attempts = CAST(attempts AS INTEGER) + 1"
            f" WHERE seq IN ({marks}) RETURNING seq, CAST(id AS BLOB), CAST(queue AS BLOB),"
            " CAST(priority AS INTEGER), CAST(body AS BLOB), attempts",
            (token, until, *chosen),
        ).fetchall()
        rows.sort(key=lambda r: (-r[3], r[0]))
        return [
            Delivery(text_of(queue), bytes_of(body), text_of(id_, f"sqlite-{seq}"),
                     count_of(attempts, 1), priority, receipt=(seq, token), lease_until=until)
            for seq, id_, queue, priority, body, attempts in rows
        ]

    def _next_due(self, conn: sqlite3.Connection, queues: Sequence[str]) -> float | None:
        marks = ",".join("?" * len(queues))
        row = conn.execute(
            f"SELECT MIN(visible_at) FROM hubbub_messages WHERE queue IN ({marks})"  # noqa: S608
            f" AND {_NUMERIC}",
            tuple(queues),
        ).fetchone()
        return None if row[0] is None else float(row[0])

    async def fetch(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        version = await self.db.version()
        while True:
            got = await self.db.write(lambda c: self._claim(c, queues, limit, lease))
            remaining = deadline - loop.time()
            if got or remaining <= 0:
                return got
            due = await self.db.call(lambda c: self._next_due(c, queues))
            if due is not None:
                remaining = min(remaining, max(0.0, due - self.clock.time()))
            if remaining > 0:
                version = await self.db.changed_since(version, remaining)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            receipts = [d.receipt for d in deliveries]
            await self.db.write(
                lambda c: c.executemany(
                    "DELETE FROM hubbub_messages WHERE seq = ? AND token = ?", receipts
                )
            )

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

        def move(conn: sqlite3.Connection) -> None:
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

        await self.db.write(move)

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
        sql = ("SELECT CAST(id AS BLOB), CAST(queue AS BLOB), CAST(body AS BLOB),"
               " CAST(reason AS BLOB), CAST(died_at AS REAL) FROM hubbub_dead")
        params: tuple[Any, ...] = (limit,)
        if queue is not None:
            sql += " WHERE queue = ?"
            params = (queue, limit)
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
