"""In-process transport for tests and one-process use: ``memory://`` or ``memory://name``.

Transports opened with the same URL in one process share one store, from any thread or
event loop, so a producer on one loop and a worker on another see the same queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from hubbub._text import cap
from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.transports._dead import DeadFilter, retention_of
from hubbub.transports._dead import dropped as log_dropped
from hubbub.transports._safe import check_queue, due_at
from hubbub.transports.base import (
    Capabilities,
    DeadLetter,
    DeadLetterRequest,
    Delivery,
    Outgoing,
    QueueStats,
    Transport,
)


@dataclass(slots=True)
class _Message:
    id: str
    queue: str
    body: bytes
    priority: int
    seq: int
    visible_at: float = 0.0
    attempts: int = 0
    token: int | None = None  # set while leased


@dataclass
class _Store:
    lock: threading.Lock = field(default_factory=threading.Lock)
    messages: dict[int, _Message] = field(default_factory=dict)  # seq -> message
    dead: list[DeadLetter] = field(default_factory=list)
    waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=set)
    seq: itertools.count[int] = field(default_factory=itertools.count)
    tokens: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def wake(self) -> None:
        for loop, event in list(self.waiters):
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


def _store(url: str) -> _Store:
    with _STORES_LOCK:
        return _STORES.setdefault(url, _Store())


class MemoryTransport(Transport):
    """Everything in a dict guarded by a lock; leases and delays use the given clock."""

    capabilities: Capabilities = Capabilities()

    def __init__(self, url: str = "memory://", *, clock: Clock = SYSTEM_CLOCK,
                 dead_ttl: float | None = None, dead_max: int | None = None) -> None:
        # the store is named by the URL without the dead-letter options: one store, however
        # each transport of it keeps its dead letters
        self.url, self.retention = retention_of(url, dead_ttl, dead_max)
        self.clock = clock
        self._store = _store(self.url)

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, items: Sequence[Outgoing]) -> None:
        store = self._store
        now = self.clock.time()
        for item in items:  # all checked before any is stored
            check_queue(item)
        with store.lock:
            for item in items:
                seq = next(store.seq)
                store.messages[seq] = _Message(
                    item.id, item.queue, item.body, item.priority, seq,
                    visible_at=due_at(item.eta, now) or now,
                )
        store.wake()

    def _claim(self, queues: Sequence[str], limit: int, lease: float) -> list[Delivery]:
        store = self._store
        now = self.clock.time()
        wanted = set(queues)
        with store.lock:
            due = [
                (-m.priority, m.seq, m)
                for m in store.messages.values()
                if m.queue in wanted and m.visible_at <= now
            ]
            chosen = [m for _, _, m in heapq.nsmallest(limit, due)]
            out = []
            for m in chosen:
                m.token = next(store.tokens)
                m.attempts += 1
                m.visible_at = now + lease
                out.append(
                    Delivery(m.queue, m.body, m.id, m.attempts, m.priority,
                             receipt=(m.seq, m.token), lease_until=m.visible_at)
                )
            return out

    async def fetch(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        event = asyncio.Event()
        waiter = (loop, event)
        self._store.waiters.add(waiter)
        try:
            while True:
                event.clear()
                got = self._claim(queues, limit, lease)
                remaining = deadline - loop.time()
                if got or remaining <= 0:
                    return got
                # Delayed messages and expired leases wake nobody: look again soon.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, 0.02))
        finally:
            self._store.waiters.discard(waiter)

    def _owned(self, delivery: Delivery) -> _Message | None:
        seq, token = delivery.receipt
        message = self._store.messages.get(seq)
        return message if message is not None and message.token == token else None

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._store.lock:
            for d in deliveries:
                if self._owned(d) is not None:
                    del self._store.messages[d.receipt[0]]

    async def release(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        now = self.clock.time()
        with self._store.lock:
            for d in deliveries:
                m = self._owned(d)
                if m is not None:
                    m.token = None
                    m.visible_at = now + delay
                    m.attempts = max(0, m.attempts - 1)
        self._store.wake()

    async def dead_letter(self, requests: Sequence[DeadLetterRequest]) -> None:
        now = self.clock.time()
        with self._store.lock:
            for r in requests:
                if self._owned(r.delivery) is not None:
                    m = self._store.messages.pop(r.delivery.receipt[0])
                    self._store.dead.append(DeadLetter(m.id, m.queue, m.body, cap(r.reason), now))
            queues = {r.delivery.queue for r in requests}
            expired, over = self._prune(queues, now)
        for queue in sorted(queues):
            log_dropped(queue, over.get(queue, 0),
                        f"over the cap of {self.retention.limit}, oldest first")
            log_dropped(queue, expired.get(queue, 0),
                        f"older than the retention of {self.retention.ttl:g}s")

    def _prune(self, queues: set[str], now: float) -> tuple[dict[str, int], dict[str, int]]:
        """Drop expired dead letters, then the oldest of ``queues`` past the cap (lock held).

        Returns:
            How many were dropped per queue: expired, over the cap.
        """
        cutoff = self.retention.cutoff(now)
        expired: dict[str, int] = {}
        over: dict[str, int] = {}
        kept: list[DeadLetter] = []
        for d in self._store.dead:
            if d.died_at < cutoff:
                expired[d.queue] = expired.get(d.queue, 0) + 1
            else:
                kept.append(d)
        counts: dict[str, int] = {}
        for d in kept:
            counts[d.queue] = counts.get(d.queue, 0) + 1
        excess = {q: counts.get(q, 0) - self.retention.limit for q in queues}
        final = []
        for d in kept:  # oldest first
            if excess.get(d.queue, 0) > 0:
                excess[d.queue] -= 1
                over[d.queue] = over.get(d.queue, 0) + 1
            else:
                final.append(d)
        self._store.dead = final
        return expired, over

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        now = self.clock.time()
        lost = []
        with self._store.lock:
            for d in deliveries:
                m = self._owned(d)
                if m is None or m.visible_at < now:
                    lost.append(d)
                    continue
                m.visible_at = d.lease_until = now + lease
        return lost

    async def purge(self, queue: str) -> int:
        with self._store.lock:
            doomed = [s for s, m in self._store.messages.items()
                      if m.queue == queue and m.token is None]
            for seq in doomed:
                del self._store.messages[seq]
        return len(doomed)

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        now = self.clock.time()
        counts: dict[str, dict[str, int]] = {}
        with self._store.lock:
            for m in self._store.messages.values():
                c = counts.setdefault(m.queue, {"ready": 0, "delayed": 0, "leased": 0, "dead": 0})
                if m.visible_at <= now:
                    c["ready"] += 1
                elif m.token is not None:
                    c["leased"] += 1
                else:
                    c["delayed"] += 1
            for dead in self._store.dead:
                counts.setdefault(
                    dead.queue, {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
                )["dead"] += 1
        names = sorted(counts) if queues is None else list(queues)
        return [QueueStats(q, **counts.get(q, {})) for q in names]

    async def list_dead(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        cutoff = self.retention.cutoff(self.clock.time())
        with self._store.lock:
            return [d for d in self._store.dead if (queue is None or d.queue == queue)
                    and d.died_at >= cutoff][:limit]

    async def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        wanted = None if ids is None else set(ids)
        with self._store.lock:
            chosen = [d for d in self._store.dead if wanted is None or d.id in wanted]
            self._store.dead = [d for d in self._store.dead if d not in chosen]
        await self.publish([Outgoing(d.queue, d.body, d.id) for d in chosen])
        return len(chosen)

    async def delete_dead(self, ids: Sequence[str]) -> int:
        wanted = set(ids)
        with self._store.lock:
            before = len(self._store.dead)
            self._store.dead = [d for d in self._store.dead if d.id not in wanted]
            return before - len(self._store.dead)

    async def purge_dead(self, *, older_than: float | None = None, task: str | None = None,
                         queue: str | None = None) -> int:
        match = DeadFilter(older_than, task, queue)
        now = self.clock.time()
        with self._store.lock:
            before = len(self._store.dead)
            self._store.dead = [d for d in self._store.dead
                                if not match.matches(d.queue, d.died_at, now, d.body)]
            return before - len(self._store.dead)
