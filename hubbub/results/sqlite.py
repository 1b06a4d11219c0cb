"""Results in the same kind of SQLite file as the embedded broker (often the same file)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from hubbub._sqlite import SQLiteFile
from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.codecs import json_dumps, json_loads
from hubbub.limits.sqlite import SCHEMA as LIMITS_SCHEMA
from hubbub.limits.sqlite import SQLiteLimits
from hubbub.results.base import (
    REPLACE_REVOKED,
    STICKY_STATES,
    ChordJoin,
    ChordMember,
    HistoryQuery,
    HistoryRow,
    ResultBackend,
    ResultRecord,
    State,
    decode_entry,
    decode_record,
    decode_values,
    encode_entry,
    encode_record,
    encode_value,
    id_bytes,
    replaces,
)
from hubbub.results.history import (
    MAX_ATTEMPTS,
    Attempt,
    HistoryDetail,
    dump,
    load_attempts,
    load_note,
)
from hubbub.transports.base import Delivery
from hubbub.transports.sqlite import SQLiteTransport

SCHEMA = """
CREATE TABLE IF NOT EXISTS hubbub_results (
    id         TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    record     BLOB NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS hubbub_results_expiry ON hubbub_results (expires_at);
CREATE TABLE IF NOT EXISTS hubbub_workers (
    name       TEXT PRIMARY KEY,
    info       BLOB NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS hubbub_chord_members (
    chord      TEXT NOT NULL,
    member     TEXT NOT NULL,
    value      BLOB NOT NULL,
    expires_at REAL,
    PRIMARY KEY (chord, member)
);
CREATE TABLE IF NOT EXISTS hubbub_chord_flags (
    chord      TEXT NOT NULL,
    flag       TEXT NOT NULL,
    expires_at REAL,
    PRIMARY KEY (chord, flag)
);
CREATE TABLE IF NOT EXISTS hubbub_groups (
    id         TEXT PRIMARY KEY,
    members    BLOB NOT NULL,
    expires_at REAL
);
-- history: one compact row per task, searchable by each filter the dashboard offers
CREATE TABLE IF NOT EXISTS hubbub_history (
    id          TEXT PRIMARY KEY,
    task        TEXT,
    state       TEXT NOT NULL,
    worker      TEXT,
    retries     INTEGER NOT NULL DEFAULT 0,
    created_at  REAL,
    started_at  REAL,
    finished_at REAL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS hubbub_history_updated ON hubbub_history (updated_at);
CREATE INDEX IF NOT EXISTS hubbub_history_task ON hubbub_history (task, updated_at);
CREATE INDEX IF NOT EXISTS hubbub_history_state ON hubbub_history (state, updated_at);
CREATE INDEX IF NOT EXISTS hubbub_history_worker ON hubbub_history (worker, updated_at);
-- history details: a task's note (arguments, links) and its attempts, kept with its row
CREATE TABLE IF NOT EXISTS hubbub_history_notes (
    id          TEXT PRIMARY KEY,
    note        BLOB,
    retried_as  TEXT,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS hubbub_history_notes_updated ON hubbub_history_notes (updated_at);
CREATE TABLE IF NOT EXISTS hubbub_history_attempts (
    id          TEXT NOT NULL,
    n           INTEGER NOT NULL,
    attempt     BLOB NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (id, n)
);
CREATE INDEX IF NOT EXISTS hubbub_history_attempts_at ON hubbub_history_attempts (at);
"""
SCHEMA += LIMITS_SCHEMA  # -- limits: their tables live in the same file --
_STICKY = ",".join(f"'{s.value}'" for s in STICKY_STATES)
_OVER_REVOKED = ",".join(f"'{s.value}'" for s in REPLACE_REVOKED)
_UPSERT = (
    "INSERT INTO hubbub_results (id, state, record, expires_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET state = excluded.state,"
    " record = excluded.record, expires_at = excluded.expires_at"
)
# -- history --: the same store rule as the results table (a late STARTED never hides SUCCESS)
_HISTORY_UPSERT = (  # noqa: S608 (fixed state names, no input)
    "INSERT INTO hubbub_history (id, task, state, worker, retries, created_at, started_at,"
    " finished_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET task = excluded.task, state = excluded.state,"
    " worker = excluded.worker, retries = excluded.retries,"
    " created_at = COALESCE(excluded.created_at, hubbub_history.created_at),"
    " started_at = COALESCE(excluded.started_at, hubbub_history.started_at),"
    " finished_at = excluded.finished_at, updated_at = excluded.updated_at"
) + (f" WHERE hubbub_history.state NOT IN ({_STICKY})"
     f" OR (hubbub_history.state = 'REVOKED' AND excluded.state IN ({_OVER_REVOKED}))")
_NOTE_UPSERT = (
    "INSERT INTO hubbub_history_notes (id, note, updated_at) VALUES (?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET note = excluded.note, updated_at = excluded.updated_at")
_ATTEMPT_UPSERT = ("INSERT OR REPLACE INTO hubbub_history_attempts (id, n, attempt, at)"
                   " VALUES (?, ?, ?, ?)")
# Details go with their row: those of rows no longer there, once old enough, are deleted.
_PRUNE_DETAILS = (
    "DELETE FROM hubbub_history_notes WHERE updated_at < ? AND NOT EXISTS"
    " (SELECT 1 FROM hubbub_history h WHERE h.id = hubbub_history_notes.id)",
    "DELETE FROM hubbub_history_attempts WHERE at < ? AND NOT EXISTS"
    " (SELECT 1 FROM hubbub_history h WHERE h.id = hubbub_history_attempts.id)",
)
_HISTORY_COLUMNS = ("id, task, state, worker, retries, created_at, started_at, finished_at,"
                    " updated_at")
_SWEEP_EVERY = 60.0  # seconds between deletions of expired rows


def _key(id: str) -> str | bytes:
    """The ``id`` column's value: the id as text, or, if it holds lone surrogates (which
    SQLite's UTF-8 text cannot), its surrogatepass bytes as a BLOB, which never equals text."""
    try:
        id.encode()
    except UnicodeEncodeError:
        return id_bytes(id)
    return id


def _told_by_row(attempt: Attempt, row: HistoryRow) -> bool:
    """Whether ``attempt`` says nothing its history ``row`` does not: the attempt that ended
    a task in SUCCESS, the common case. It is not written (a fourth row per task, in a
    fourth b-tree); ``history_detail`` makes it again from the row (``_success_of``)."""
    return (row.state == State.SUCCESS and attempt.outcome == State.SUCCESS.value
            and attempt.error is None and attempt.delay is None
            and attempt.number == row.retries + 1 and attempt.at == row.finished_at
            and attempt.worker == row.worker)


def _success_of(row: tuple[Any, ...] | None) -> Attempt | None:
    """The attempt a SUCCESS history row (state, retries, worker, finished_at) ended."""
    if row is None or row[0] != State.SUCCESS.value or not isinstance(row[1], int) or (
            not isinstance(row[3], float | int)):
        return None
    return Attempt(row[1] + 1, float(row[3]), row[2] if isinstance(row[2], str) else None,
                   State.SUCCESS.value)


class SQLiteResults(ResultBackend):
    """One row per task id; expired rows are ignored at once and deleted now and then."""

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.db = SQLiteFile(url, SCHEMA)
        self._swept_at = 0.0

    async def connect(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def store(self, records: Sequence[ResultRecord], *, ttl: float | None) -> None:
        if records:
            await self.db.write(self._upsert(records, ttl))

    async def store_and_ack(self, records: Sequence[ResultRecord], *, ttl: float | None,
                            transport: object, deliveries: Sequence[Delivery]) -> bool:
        """``store(records)`` and then ``transport.ack(deliveries)`` in one write transaction,
        when ``transport`` is the SQLite broker on this store's file (the default set-up):
        one commit and one trip to the database thread instead of two, and the records are
        still durable no later than the acks that follow them.

        Returns:
            True when both are written; False, having written nothing, when ``transport``
            is another broker or another file (then store, then ack, as usual).

        Raises:
            TransportUnavailable: SQLite cannot write now; neither was written.
            TransportError: SQLite refused the statements; neither was written.
        """
        if not (isinstance(transport, SQLiteTransport) and transport.db.same_file(self.db)):
            return False
        upsert = self._upsert(records, ttl) if records else None

        def both(conn: sqlite3.Connection) -> None:
            if upsert is not None:
                upsert(conn)
            transport.ack_in(conn, deliveries)  # after the records, in the same commit

        await self.db.write(both)
        return True

    def _upsert(self, records: Sequence[ResultRecord], ttl: float | None
                ) -> Callable[[sqlite3.Connection], None]:
        """The statements that store ``records`` (encoded here, on the caller's thread)."""
        now = self.clock.time()
        expires = None if ttl is None else now + ttl
        rows = [(_key(r.id), r.state.value, encode_record(r), expires) for r in records]
        sweep = now - self._swept_at > _SWEEP_EVERY
        if sweep:
            self._swept_at = now

        def upsert(conn: sqlite3.Connection) -> None:
            conn.executemany(  # the store rule of results.base.replaces, in SQL
                _UPSERT + f" WHERE hubbub_results.state NOT IN ({_STICKY})"
                f" OR (hubbub_results.state = 'REVOKED' AND excluded.state IN ({_OVER_REVOKED}))"
                " OR hubbub_results.expires_at <= ?",
                [(*row, now) for row in rows],
            )
            self._write_history(conn, records, now)
            if sweep:
                conn.execute("DELETE FROM hubbub_results WHERE expires_at <= ?", (now,))
                self._prune(conn, now)

        return upsert

    async def store_unless(self, records: Sequence[ResultRecord], *, ttl: float | None,
                           unless: frozenset[State]) -> list[str]:
        now = self.clock.time()
        expires = None if ttl is None else now + ttl

        def upsert(conn: sqlite3.Connection) -> list[str]:  # in one write transaction
            stored = []
            for record in records:
                key = _key(record.id)
                row = conn.execute("SELECT state, expires_at FROM hubbub_results WHERE id = ?",
                                   (key,)).fetchone()
                live = row is not None and (row[1] is None or row[1] > now)
                if live and (row[0] in unless or not replaces(record.state, State(row[0]))):
                    continue
                conn.execute(_UPSERT, (key, record.state.value, encode_record(record), expires))
                stored.append(record.id)
            self._write_history(conn, [r for r in records if r.id in set(stored)], now)
            return stored

        return await self.db.write(upsert)

    def _select(self, conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, ResultRecord]:
        now = self.clock.time()
        found: dict[str, ResultRecord] = {}
        keys = {_key(i): i for i in ids}
        wanted = list(keys)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, data in conn.execute(
                f"SELECT id, record FROM hubbub_results WHERE id IN ({marks})"  # noqa: S608
                " AND (expires_at IS NULL OR expires_at > ?)",
                (*chunk, now),
            ):
                id_ = keys[key]
                record = decode_record(data)
                if record.id != id_:  # stored with its surrogates escaped
                    record = dataclasses.replace(record, id=id_)
                found[id_] = record
        return found

    async def get(self, ids: Sequence[str]) -> dict[str, ResultRecord]:
        if not ids:
            return {}
        return await self.db.call(lambda c: self._select(c, ids))

    async def wait(self, id: str, *, timeout: float | None) -> ResultRecord | None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        version = await self.db.version()
        while True:
            record = (await self.get([id])).get(id)
            if record is not None and record.ready:
                return record
            remaining = 3600.0 if deadline is None else deadline - loop.time()
            if remaining <= 0:
                return None
            version = await self.db.changed_since(version, remaining)

    async def forget(self, ids: Sequence[str]) -> None:
        if ids:
            await self.db.write(
                lambda c: c.executemany(
                    "DELETE FROM hubbub_results WHERE id = ?", [(_key(i),) for i in ids]
                )
            )

    async def heartbeat(self, name: str, info: dict[str, Any], *, ttl: float) -> None:
        now = self.clock.time()
        row = (_key(name), encode_entry(info), now + ttl)

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO hubbub_workers (name, info, expires_at) VALUES (?, ?, ?)"
                         " ON CONFLICT (name) DO UPDATE SET info = excluded.info,"
                         " expires_at = excluded.expires_at", row)
            # A few rows at most: the entries of workers that died go with the next beat.
            conn.execute("DELETE FROM hubbub_workers WHERE expires_at <= ?", (now,))

        await self.db.write(upsert)

    async def workers(self) -> dict[str, dict[str, Any]]:
        now = self.clock.time()
        rows = await self.db.call(lambda c: c.execute(
            "SELECT name, info FROM hubbub_workers WHERE expires_at > ?", (now,)).fetchall())
        found = {}
        for name, data in rows:
            info = decode_entry(data)
            if info is not None:
                key = name.decode("utf-8", "surrogatepass") if isinstance(name, bytes) else name
                found[str(key)] = info
        return found

    async def forget_worker(self, name: str) -> None:
        await self.db.write(lambda c: c.execute("DELETE FROM hubbub_workers WHERE name = ?",
                                                (_key(name),)))

    # -- history --------------------------------------------------------------------------

    def _write_history(self, conn: sqlite3.Connection, records: Sequence[ResultRecord],
                       now: float) -> None:
        if self.history_ttl is None or not records:
            return
        rows = [HistoryRow.of(r, now) for r in records]
        conn.executemany(_HISTORY_UPSERT, [
            (_key(r.id), r.task, r.state.value, r.worker, r.retries, r.created_at,
             r.started_at, r.finished_at, now) for r in rows])
        conn.executemany(_NOTE_UPSERT, [(_key(r.id), dump(r.note), now) for r in records
                                        if r.note is not None])
        attempts = [r for r in records if r.attempt is not None]
        conn.executemany(_ATTEMPT_UPSERT, [
            (_key(r.id), r.attempt.number, dump(r.attempt), r.attempt.at)
            for r, row in zip(records, rows, strict=True)
            if r.attempt is not None and not _told_by_row(r.attempt, row)])
        conn.executemany(  # the latest MAX_ATTEMPTS of a task are kept
            "DELETE FROM hubbub_history_attempts WHERE id = ? AND n <= ?",
            [(_key(r.id), r.attempt.number - MAX_ATTEMPTS) for r in attempts
             if r.attempt is not None and r.attempt.number > MAX_ATTEMPTS])

    def _prune(self, conn: sqlite3.Connection, now: float) -> None:
        if self.history_ttl is not None:
            self._delete_history(conn, now - self.history_ttl)

    @staticmethod
    def _delete_history(conn: sqlite3.Connection, before: float) -> None:
        conn.execute("DELETE FROM hubbub_history WHERE updated_at < ?", (before,))
        for sql in _PRUNE_DETAILS:
            conn.execute(sql, (before,))

    async def search_history(self, query: HistoryQuery) -> list[HistoryRow]:
        where: list[str] = []
        params: list[object] = []
        for column, value in (("id", query.id), ("task", query.task), ("worker", query.worker),
                              ("state", None if query.state is None else query.state.value)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(_key(value) if column == "id" else value)
        if self.history_ttl is not None:  # rows a sweep has not reached yet stay hidden
            since = self.clock.time() - self.history_ttl
            query = dataclasses.replace(query, since=max(since, query.since or since))
        if query.since is not None:
            where.append("updated_at >= ?")
            params.append(query.since)
        if query.until is not None:
            where.append("updated_at < ?")
            params.append(query.until)
        sql = (f"SELECT {_HISTORY_COLUMNS} FROM hubbub_history"  # noqa: S608 (fixed names)
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY updated_at DESC LIMIT ?")
        params.append(max(0, query.limit))
        rows = await self.db.call(lambda c: c.execute(sql, params).fetchall())
        return [HistoryRow(
            id_.decode("utf-8", "surrogatepass") if isinstance(id_, bytes) else id_,
            task, State(state), worker, retries, created, started, finished, updated)
            for id_, task, state, worker, retries, created, started, finished, updated in rows]

    async def prune_history(self, before: float) -> None:
        await self.db.write(lambda c: self._delete_history(c, before))

    async def history_detail(self, id: str) -> HistoryDetail:
        key = _key(id)

        def read(conn: sqlite3.Connection) -> HistoryDetail:
            note = conn.execute("SELECT note, retried_as FROM hubbub_history_notes"
                                " WHERE id = ?", (key,)).fetchone()
            written = conn.execute("SELECT n, attempt FROM hubbub_history_attempts"
                                   " WHERE id = ? ORDER BY n", (key,)).fetchall()
            attempts = [a for _, a in written]
            row = conn.execute("SELECT state, retries, worker, finished_at FROM hubbub_history"
                               " WHERE id = ?", (key,)).fetchone()
            last = _success_of(row)
            if last is not None and last.number not in {n for n, _ in written}:
                attempts.append(dump(last))  # not written: see _told_by_row
            return HistoryDetail(None if note is None else load_note(note[0]),
                                 load_attempts(attempts), None if note is None else note[1])

        return await self.db.call(read)

    async def link_retry(self, id: str, retry: str) -> None:
        if self.history_ttl is None:
            return
        row = (_key(id), retry, self.clock.time())
        await self.db.write(lambda c: c.execute(
            "INSERT INTO hubbub_history_notes (id, retried_as, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET retried_as = excluded.retried_as", row))

    # -- limits (hubbub.limits) -------------------------------------------------------------

    def limits(self) -> SQLiteLimits:
        return SQLiteLimits(self.db, self.clock)

    # -- canvas: a chord's members are rows unique by (chord, member), counted in the same
    # write transaction that inserts them, so two workers never see the same count --------

    def _expiry(self, ttl: float | None) -> float | None:
        return None if ttl is None else self.clock.time() + ttl

    async def chord_join(self, members: Sequence[ChordMember], *, ttl: float | None
                         ) -> list[ChordJoin]:
        now, expires = self.clock.time(), self._expiry(ttl)

        def join(conn: sqlite3.Connection) -> list[ChordJoin]:
            joins = []
            counts: dict[str | bytes, int] = {}  # counted once per chord and batch
            for m in members:
                chord = _key(m.chord)
                conn.execute("DELETE FROM hubbub_chord_members WHERE chord = ? AND member = ?"
                             " AND expires_at <= ?", (chord, _key(m.member), now))
                added = conn.execute(
                    "INSERT INTO hubbub_chord_members (chord, member, value, expires_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (chord, member) DO NOTHING",
                    (chord, _key(m.member), encode_value(m.index, m.value), expires),
                ).rowcount == 1
                if chord in counts:
                    counts[chord] += added
                else:
                    [counts[chord]] = conn.execute(
                        "SELECT count(*) FROM hubbub_chord_members WHERE chord = ?"
                        " AND (expires_at IS NULL OR expires_at > ?)", (chord, now)).fetchone()
                fired = conn.execute(
                    "SELECT 1 FROM hubbub_chord_flags WHERE chord = ? AND flag = 'fired'"
                    " AND (expires_at IS NULL OR expires_at > ?)", (chord, now)
                ).fetchone() is not None
                joins.append(ChordJoin(int(counts[chord]), added, fired))
            return joins

        return await self.db.write(join)

    async def chord_values(self, chord: str) -> list[Any]:
        now = self.clock.time()
        rows = await self.db.call(lambda c: c.execute(
            "SELECT value FROM hubbub_chord_members WHERE chord = ?"
            " AND (expires_at IS NULL OR expires_at > ?)", (_key(chord), now)).fetchall())
        return decode_values([row[0] for row in rows])

    async def chord_mark(self, chord: str, flag: str, *, ttl: float | None) -> bool:
        now, expires = self.clock.time(), self._expiry(ttl)

        def mark(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM hubbub_chord_flags WHERE chord = ? AND flag = ?"
                         " AND expires_at <= ?", (_key(chord), flag, now))
            return conn.execute(
                "INSERT INTO hubbub_chord_flags (chord, flag, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (chord, flag) DO NOTHING", (_key(chord), flag, expires)
            ).rowcount == 1

        return await self.db.write(mark)

    async def save_group(self, group: str, ids: Sequence[str], *, ttl: float | None) -> None:
        row = (_key(group), json_dumps(list(ids)), self._expiry(ttl))
        await self.db.write(lambda c: c.execute(
            "INSERT INTO hubbub_groups (id, members, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET members = excluded.members,"
            " expires_at = excluded.expires_at", row))

    async def read_group(self, group: str) -> list[str] | None:
        now = self.clock.time()
        row = await self.db.call(lambda c: c.execute(
            "SELECT members FROM hubbub_groups WHERE id = ?"
            " AND (expires_at IS NULL OR expires_at > ?)", (_key(group), now)).fetchone())
        if row is None:
            return None
        ids = json_loads(row[0])
        return [str(i) for i in ids] if isinstance(ids, list) else None
