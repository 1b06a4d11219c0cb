"""``Monitor``: what ``hubbub top`` shows, built from what the plane and the stores offer.

It is fed snapshots (the worker registry and the queues' counts, read every second or so)
and, where workers publish them, events. From the events it counts throughput, per-queue
in and out rates and keeps the latest failures; without events it falls back on what the
snapshots tell: the fleet's processed counters for throughput, and the change of a queue's
backlog for its net rate. Pure logic, no I/O: the command does the reading.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hubbub.control.registry import WorkerInfo
from hubbub.control.wire import WireEvent
from hubbub.transports.base import QueueStats

__all__ = ["BUCKET", "HISTORY", "RATE_WINDOW", "Monitor", "QueueRow"]

BUCKET = 10.0  # seconds per throughput bar
HISTORY = 300.0  # seconds of throughput kept (the "last minutes")
RATE_WINDOW = 10.0  # seconds the in/out rates average over
FAILURES_KEPT = 50
_DONE = frozenset({"task-succeeded", "task-failed"})


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One queue's line: its counts, and tasks a second in and out (None: unknown)."""

    name: str
    ready: int
    delayed: int
    leased: int
    dead: int
    rate_in: float | None
    rate_out: float | None


@dataclass
class Monitor:
    """The state of the fleet as ``hubbub top`` sees it.

    Args:
        queues: queues to show even when no live worker serves them.
    """

    queues: tuple[str, ...] = ()
    workers: list[WorkerInfo] = field(default_factory=list)
    stats: dict[str, QueueStats] = field(default_factory=dict)
    failures: deque[WireEvent] = field(default_factory=lambda: deque(maxlen=FAILURES_KEPT))
    events_seen: int = 0
    updated_at: float = 0.0
    _done: dict[int, int] = field(default_factory=dict)  # bucket -> tasks finished in it
    _in: dict[str, deque[float]] = field(default_factory=dict)  # queue -> sent times
    _out: dict[str, deque[float]] = field(default_factory=dict)  # queue -> started times
    _backlog: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    _processed: tuple[float, dict[str, int]] | None = None  # last snapshot's counters

    # -- feeding -------------------------------------------------------------------------

    def snapshot(self, now: float, workers: list[WorkerInfo],
                 stats: list[QueueStats]) -> None:
        """Take the registry's workers and the queues' counts read at ``now``."""
        if not self.events_seen and self._processed is not None:
            # No events: throughput is what the fleet's counters grew by since the last
            # snapshot (a worker seen for the first time is counted from then on).
            _, before = self._processed
            grown = sum(max(0, w.processed - before[w.name]) for w in workers
                        if w.name in before)
            self._count_done(now, grown)
        self._processed = (now, {w.name: w.processed for w in workers})
        self.workers = workers
        self.stats = {s.queue: s for s in stats}
        for s in stats:
            history = self._backlog.setdefault(s.queue, deque(maxlen=64))
            history.append((now, s.ready + s.delayed + s.leased))
        self.updated_at = now

    def event(self, event: WireEvent) -> None:
        """Count one event from the plane."""
        self.events_seen += 1
        kind, at = event.type, event.timestamp
        if kind in _DONE:
            self._count_done(at, 1)
        if kind == "task-failed":
            self.failures.append(event)
        elif kind == "task-sent" and event.queue:
            self._in.setdefault(event.queue, deque(maxlen=100_000)).append(at)
        elif kind == "task-started" and event.queue:
            self._out.setdefault(event.queue, deque(maxlen=100_000)).append(at)

    def _count_done(self, at: float, n: int) -> None:
        if n <= 0:
            return
        bucket = int(at // BUCKET)
        self._done[bucket] = self._done.get(bucket, 0) + n
        oldest = bucket - int(HISTORY // BUCKET)
        for old in [b for b in self._done if b <= oldest]:
            del self._done[old]

    # -- reading -------------------------------------------------------------------------

    def queue_names(self) -> list[str]:
        """Every queue worth a line: the given ones, those live workers serve, those read."""
        names = dict.fromkeys(self.queues)
        for worker in self.workers:
            for lane in worker.lanes:
                names.update(dict.fromkeys(lane.queues))
        names.update(dict.fromkeys(self.stats))
        return list(names)

    def queue_rows(self, now: float) -> list[QueueRow]:
        rows = []
        for name in self.queue_names():
            s = self.stats.get(name, QueueStats(name))
            out = self._rate(self._out.get(name), now) if self.events_seen else None
            if self._in:  # producers send task-sent: count them
                sent: float | None = self._rate(self._in.get(name), now)
            else:  # what came in is what went out plus what the backlog grew by
                net = self._net(name)
                sent = None if net is None or out is None else max(0.0, out + net)
            rows.append(QueueRow(name, s.ready, s.delayed, s.leased, s.dead, sent, out))
        return rows

    def _rate(self, times: deque[float] | None, now: float) -> float:
        if not times:
            return 0.0
        while times and times[0] < now - HISTORY:
            times.popleft()
        recent = sum(1 for t in reversed(times) if t >= now - RATE_WINDOW)
        return recent / RATE_WINDOW

    def _net(self, queue: str) -> float | None:
        """How fast ``queue``'s backlog grew over about the rate window (per second)."""
        history = self._backlog.get(queue)
        if not history or len(history) < 2:
            return None
        t1, n1 = history[-1]
        t0, n0 = next(((t, n) for t, n in history if t >= t1 - RATE_WINDOW), history[0])
        return None if t1 <= t0 else (n1 - n0) / (t1 - t0)

    def throughput(self, now: float) -> list[int]:
        """Tasks finished in each ``BUCKET`` of the last ``HISTORY`` seconds, oldest first
        (the bucket under way last)."""
        current = int(now // BUCKET)
        count = int(HISTORY // BUCKET)
        return [self._done.get(b, 0) for b in range(current - count + 1, current + 1)]

    def rate(self, now: float, seconds: float) -> float:
        """Tasks finished a second over the last ``seconds`` (whole buckets)."""
        buckets = max(1, int(seconds // BUCKET))
        history = self.throughput(now)[-buckets - 1:-1] or [0]  # whole buckets only
        return sum(history) / (len(history) * BUCKET)
