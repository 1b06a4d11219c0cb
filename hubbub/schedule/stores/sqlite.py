"""Schedule state in the SQLite file of the result store (often the broker's own file).

Two tables: ``hubbub_beat_lease`` (one row: owner and expiry) and ``hubbub_beat_slots`` (one
row per entry: its last claimed slot). Every change is one ``BEGIN IMMEDIATE`` transaction,
so the compare and the write of a claim are one step for every process on the file. Times
come from the callers' wall clock, which all processes sharing one file also share.
"""

from __future__ import annotations

import sqlite3

from hubbub._sqlite import SQLiteFile
from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.schedule.store import Lease, ScheduleStore, SlotState

SCHEMA = """
CREATE TABLE IF NOT EXISTS hubbub_beat_lease (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS hubbub_beat_slots (
    entry      TEXT PRIMARY KEY,
    slot       REAL NOT NULL,
    published  INTEGER NOT NULL,
    owner      TEXT NOT NULL,
    claimed_at REAL NOT NULL
);
"""
_LEASE = "beat"  # one lease per file: one schedule per application


class SQLiteScheduleStore(ScheduleStore):
    """The lease row and the claim rows, changed only inside write transactions.

    Args:
        url: ``sqlite:///path.db``, the hub's result store.
        clock: the time source for lease expiry and claim times.
    """

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.db = SQLiteFile(url, SCHEMA)

    async def connect(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    @staticmethod
    def _lease(conn: sqlite3.Connection) -> Lease | None:
        row = conn.execute("SELECT owner, expires_at FROM hubbub_beat_lease WHERE name = ?",
                           (_LEASE,)).fetchone()
        return None if row is None else Lease(row[0], row[1])

    async def acquire(self, owner: str, ttl: float) -> bool:
        now = self.clock.time()
        current = await self.db.call(self._lease)
        if current is not None and current.owner != owner and current.expires_at > now:
            return False  # a live leader: no need for a write transaction

        def take(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO hubbub_beat_lease (name, owner, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
                " expires_at = excluded.expires_at"
                " WHERE hubbub_beat_lease.owner = excluded.owner"
                " OR hubbub_beat_lease.expires_at <= ?",
                (_LEASE, owner, now + ttl, now),
            )
            return cursor.rowcount == 1

        return await self.db.write(take)

    async def renew(self, owner: str, ttl: float) -> bool:
        now = self.clock.time()

        def extend(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE hubbub_beat_lease SET expires_at = ?"
                " WHERE name = ? AND owner = ? AND expires_at > ?",
                (now + ttl, _LEASE, owner, now),
            )
            return cursor.rowcount == 1

        return await self.db.write(extend)

    async def release(self, owner: str) -> None:
        await self.db.write(lambda conn: conn.execute(
            "DELETE FROM hubbub_beat_lease WHERE name = ? AND owner = ?", (_LEASE, owner)))

    async def leader(self) -> Lease | None:
        lease = await self.db.call(self._lease)
        return lease if lease is not None and lease.expires_at > self.clock.time() else None

    async def claim_slot(self, entry: str, slot: float, owner: str) -> bool:
        now = self.clock.time()

        def claim(conn: sqlite3.Connection) -> bool:
            lease = self._lease(conn)
            if lease is None or lease.owner != owner or lease.expires_at <= now:
                return False
            cursor = conn.execute(
                "INSERT INTO hubbub_beat_slots (entry, slot, published, owner, claimed_at)"
                " VALUES (?, ?, 0, ?, ?)"
                " ON CONFLICT (entry) DO UPDATE SET slot = excluded.slot, published = 0,"
                " owner = excluded.owner, claimed_at = excluded.claimed_at"
                " WHERE hubbub_beat_slots.slot < excluded.slot",
                (entry, slot, owner, now),
            )
            return cursor.rowcount == 1

        return await self.db.write(claim)

    async def mark_published(self, entry: str, slot: float) -> None:
        await self.db.write(lambda conn: conn.execute(
            "UPDATE hubbub_beat_slots SET published = 1 WHERE entry = ? AND slot = ?",
            (entry, slot)))

    async def last_slots(self) -> dict[str, SlotState]:
        rows = await self.db.call(lambda conn: conn.execute(
            "SELECT entry, slot, published, owner, claimed_at FROM hubbub_beat_slots"
        ).fetchall())
        return {entry: SlotState(slot, bool(published), owner, claimed_at)
                for entry, slot, published, owner, claimed_at in rows}
