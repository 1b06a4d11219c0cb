"""In-process result store, shared by every backend opened with the same URL."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.limits.memory import MemoryLimits, MemoryLimitState
from hubbub.results.base import (
    ChordJoin,
    ChordMember,
    HistoryQuery,
    HistoryRow,
    ResultBackend,
    ResultRecord,
    State,
    bounded,
    decode_entry,
    decode_values,
    encode_entry,
    encode_value,
    replaces,
)
from hubbub.results.history import MAX_ATTEMPTS, Attempt, HistoryDetail, TaskNote


@dataclass
class _Store:
    lock: threading.Lock = field(default_factory=threading.Lock)
    records: dict[str, tuple[ResultRecord, float | None]] = field(default_factory=dict)
    workers: dict[str, tuple[bytes, float]] = field(default_factory=dict)
    waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=set)
    history: dict[str, HistoryRow] = field(default_factory=dict)  # insertion: oldest change first
    notes: dict[str, TaskNote] = field(default_factory=dict)  # -- history: details by id
    attempts: dict[str, dict[int, Attempt]] = field(default_factory=dict)
    retried: dict[str, str] = field(default_factory=dict)
    limits: MemoryLimitState = field(default_factory=MemoryLimitState)  # -- limits --
    # -- canvas: chord id -> (member id -> stored value), flags, group members
    chords: dict[str, dict[str, bytes]] = field(default_factory=dict)
    flags: set[tuple[str, str]] = field(default_factory=set)
    groups: dict[str, list[str]] = field(default_factory=dict)


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


class MemoryResults(ResultBackend):
    """Records in a dict with expiry times; waiting is woken by every store."""

    def __init__(self, url: str = "memory://", *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        with _STORES_LOCK:
            self._store = _STORES.setdefault(url, _Store())

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def store(self, records: Sequence[ResultRecord], *, ttl: float | None) -> None:
        await self.store_unless(records, ttl=ttl, unless=frozenset())

    async def store_unless(self, records: Sequence[ResultRecord], *, ttl: float | None,
                           unless: frozenset[State]) -> list[str]:
        now = self.clock.time()
        expires = None if ttl is None else now + ttl
        stored = []
        with self._store.lock:
            for record in records:
                old = self._live(record.id)
                if old is None or (old.state not in unless
                                   and replaces(record.state, old.state)):
                    self._store.records[record.id] = (bounded(record), expires)
                    stored.append(record.id)
                    if self.history_ttl is not None:
                        self._store.history.pop(record.id, None)  # to the end: newest
                        self._store.history[record.id] = HistoryRow.of(record, now)
                        self._write_detail(record)
            waiters = list(self._store.waiters)
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)
        return stored

    def _write_detail(self, record: ResultRecord) -> None:
        if record.note is not None:
            self._store.notes[record.id] = record.note
        if record.attempt is not None:
            attempts = self._store.attempts.setdefault(record.id, {})
            attempts[record.attempt.number] = record.attempt
            for number in sorted(attempts)[:-MAX_ATTEMPTS]:
                del attempts[number]

    def _live(self, id: str) -> ResultRecord | None:
        entry = self._store.records.get(id)
        if entry is None:
            return None
        record, expires = entry
        if expires is not None and expires <= self.clock.time():
            del self._store.records[id]
            return None
        return record

    async def get(self, ids: Sequence[str]) -> dict[str, ResultRecord]:
        with self._store.lock:
            found = {i: self._live(i) for i in ids}
        return {i: r for i, r in found.items() if r is not None}

    async def wait(self, id: str, *, timeout: float | None) -> ResultRecord | None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiter = (loop, asyncio.Event())
        self._store.waiters.add(waiter)
        try:
            while True:
                waiter[1].clear()
                record = (await self.get([id])).get(id)
                if record is not None and record.ready:
                    return record
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter[1].wait(), remaining)
        finally:
            self._store.waiters.discard(waiter)

    async def forget(self, ids: Sequence[str]) -> None:
        with self._store.lock:
            for i in ids:
                self._store.records.pop(i, None)

    async def heartbeat(self, name: str, info: dict[str, Any], *, ttl: float) -> None:
        with self._store.lock:  # stored as JSON, so a reader never shares a mutable dict
            self._store.workers[name] = (encode_entry(info), self.clock.time() + ttl)

    async def workers(self) -> dict[str, dict[str, Any]]:
        now = self.clock.time()
        with self._store.lock:
            for name in [n for n, (_, exp) in self._store.workers.items() if exp <= now]:
                del self._store.workers[name]
            entries = {n: data for n, (data, _) in self._store.workers.items()}
        return {n: info for n, data in entries.items() if (info := decode_entry(data)) is not None}

    async def forget_worker(self, name: str) -> None:
        with self._store.lock:
            self._store.workers.pop(name, None)

    # -- history --------------------------------------------------------------------------

    async def search_history(self, query: HistoryQuery) -> list[HistoryRow]:
        if self.history_ttl is not None:
            await self.prune_history(self.clock.time() - self.history_ttl)
        with self._store.lock:
            rows = list(self._store.history.values())
        found = []
        for row in reversed(rows):
            if query.matches(row):
                found.append(row)
                if len(found) >= query.limit:
                    break
        return found

    async def prune_history(self, before: float) -> None:
        with self._store.lock:
            for id_ in [i for i, r in self._store.history.items() if r.updated_at < before]:
                del self._store.history[id_]
                for details in (self._store.notes, self._store.attempts, self._store.retried):
                    details.pop(id_, None)

    async def history_detail(self, id: str) -> HistoryDetail:
        with self._store.lock:
            attempts = self._store.attempts.get(id, {})
            return HistoryDetail(self._store.notes.get(id),
                                 [attempts[n] for n in sorted(attempts)],
                                 self._store.retried.get(id))

    async def link_retry(self, id: str, retry: str) -> None:
        if self.history_ttl is None:
            return
        with self._store.lock:
            self._store.retried[id] = retry

    # -- limits (hubbub.limits) -------------------------------------------------------------

    def limits(self) -> MemoryLimits:
        return MemoryLimits(self._store.limits, self.clock)

    # -- canvas (kept for the life of the process: the memory store is for tests) ---------

    async def chord_join(self, members: Sequence[ChordMember], *, ttl: float | None
                         ) -> list[ChordJoin]:
        joins = []
        with self._store.lock:
            for m in members:
                values = self._store.chords.setdefault(m.chord, {})
                added = m.member not in values
                if added:
                    values[m.member] = encode_value(m.index, m.value)
                joins.append(ChordJoin(len(values), added,
                                       (m.chord, "fired") in self._store.flags))
        return joins

    async def chord_values(self, chord: str) -> list[Any]:
        with self._store.lock:
            stored = list(self._store.chords.get(chord, {}).values())
        return decode_values(stored)

    async def chord_mark(self, chord: str, flag: str, *, ttl: float | None) -> bool:
        with self._store.lock:
            if (chord, flag) in self._store.flags:
                return False
            self._store.flags.add((chord, flag))
            return True

    async def save_group(self, group: str, ids: Sequence[str], *, ttl: float | None) -> None:
        with self._store.lock:
            self._store.groups[group] = list(ids)

    async def read_group(self, group: str) -> list[str] | None:
        with self._store.lock:
            ids = self._store.groups.get(group)
        return None if ids is None else list(ids)
