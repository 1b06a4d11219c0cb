"""Limits in the SQLite result store's file: one small table per kind, each step one write
transaction (``BEGIN IMMEDIATE``), so processes sharing the file never race."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from hubbub._sqlite import SQLiteFile
from hubbub.clock import Clock
from hubbub.limits.rate import Reservation, reserve
from hubbub.limits.store import LimitStore, Slot

SCHEMA = """
CREATE TABLE IF NOT EXISTS hubbub_unique (
    key        TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS hubbub_unique_expiry ON hubbub_unique (expires_at);
CREATE TABLE IF NOT EXISTS hubbub_rates (
    key TEXT PRIMARY KEY,
    tat REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS hubbub_rate_overrides (
    task TEXT PRIMARY KEY,
    rate TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hubbub_slots (
    key        TEXT NOT NULL,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (key, holder)
);
"""


class SQLiteLimits(LimitStore):
    """:class:`LimitStore` on the result store's :class:`SQLiteFile` (its schema includes
    :data:`SCHEMA`)."""

    def __init__(self, db: SQLiteFile, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def claim_uniques(self, claims: Sequence[tuple[str, str, float]]) -> list[str]:
        now = self.clock.time()

        def claim(conn: sqlite3.Connection) -> list[str]:
            conn.execute("DELETE FROM hubbub_unique WHERE expires_at <= ?", (now,))  # indexed
            holders = []
            for key, owner, ttl in claims:
                row = conn.execute("SELECT owner FROM hubbub_unique WHERE key = ?",
                                   (key,)).fetchone()
                if row is None:
                    conn.execute("INSERT INTO hubbub_unique (key, owner, expires_at)"
                                 " VALUES (?, ?, ?)", (key, owner, now + ttl))
                holders.append(owner if row is None else str(row[0]))
            return holders

        return await self.db.write(claim)

    async def release_unique(self, keys: Sequence[tuple[str, str]]) -> None:
        if keys:
            await self.db.write(lambda c: c.executemany(
                "DELETE FROM hubbub_unique WHERE key = ? AND owner = ?", list(keys)))

    async def reserve(self, key: str, *, interval: float, horizon: float,
                      lead: float = 0.0) -> Reservation:
        def take(conn: sqlite3.Connection) -> Reservation:
            row = conn.execute("SELECT tat FROM hubbub_rates WHERE key = ?", (key,)).fetchone()
            answer, tat = reserve(None if row is None else float(row[0]), self.clock.time(),
                                  interval, horizon, lead)
            if tat is not None:
                conn.execute("INSERT INTO hubbub_rates (key, tat) VALUES (?, ?)"
                             " ON CONFLICT (key) DO UPDATE SET tat = excluded.tat", (key, tat))
            return answer

        return await self.db.write(take)

    async def set_rate(self, task: str, rate: str | None) -> None:
        if rate is None:
            await self.db.write(lambda c: c.execute(
                "DELETE FROM hubbub_rate_overrides WHERE task = ?", (task,)))
        else:
            await self.db.write(lambda c: c.execute(
                "INSERT INTO hubbub_rate_overrides (task, rate) VALUES (?, ?)"
                " ON CONFLICT (task) DO UPDATE SET rate = excluded.rate", (task, rate)))

    async def rates(self) -> dict[str, str]:
        rows = await self.db.call(lambda c: c.execute(
            "SELECT task, rate FROM hubbub_rate_overrides").fetchall())
        return {str(task): str(rate) for task, rate in rows}

    async def acquire_slot(self, key: str, holder: str, *, limit: int, ttl: float) -> bool:
        now = self.clock.time()

        def take(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM hubbub_slots WHERE key = ? AND expires_at <= ?", (key, now))
            mine = conn.execute("SELECT 1 FROM hubbub_slots WHERE key = ? AND holder = ?",
                                (key, holder)).fetchone()
            if mine is None:
                (count,) = conn.execute("SELECT COUNT(*) FROM hubbub_slots WHERE key = ?",
                                        (key,)).fetchone()
                if count >= limit:
                    return False
            conn.execute("INSERT INTO hubbub_slots (key, holder, expires_at) VALUES (?, ?, ?)"
                         " ON CONFLICT (key, holder)"
                         " DO UPDATE SET expires_at = excluded.expires_at",
                         (key, holder, now + ttl))
            return True

        return await self.db.write(take)

    async def renew_slots(self, slots: Sequence[Slot], *, ttl: float) -> None:
        if slots:
            now = self.clock.time()
            await self.db.write(lambda c: c.executemany(
                "UPDATE hubbub_slots SET expires_at = ? WHERE key = ? AND holder = ?"
                " AND expires_at > ?", [(now + ttl, key, holder, now) for key, holder in slots]))

    async def release_slots(self, slots: Sequence[Slot]) -> None:
        if slots:
            await self.db.write(lambda c: c.executemany(
                "DELETE FROM hubbub_slots WHERE key = ? AND holder = ?", list(slots)))
