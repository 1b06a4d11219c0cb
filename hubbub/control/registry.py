"""The worker registry: one JSON entry per live worker, kept in the hub's result store.

A worker writes its :class:`WorkerInfo` when it comes online and again with every heartbeat,
each time live for three heartbeats; it deletes it on a clean stop. A worker that dies
without stopping (``kill -9``, a lost machine) drops out once three beats were missed.
Entries are read by anyone and may have been written by anything, so :meth:`WorkerInfo.
from_json` never raises: a field of the wrong type takes its default and marks the entry
``damaged``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hubbub._version import __version__
from hubbub.results.base import ResultBackend

__all__ = ["BEATS_TO_LIVE", "LaneEntry", "Registry", "RunningTask", "WorkerInfo", "load_average",
           "rss_mib"]

BEATS_TO_LIVE = 3  # an entry outlives this many missed heartbeats, no more
MAX_TASKS = 20  # running tasks an entry lists (it counts them all in ``running``)
_MIB = 1024 * 1024

N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class LaneEntry:
    """One lane of a worker: its queues, pool kind, concurrency and autoscale bounds."""

    queues: tuple[str, ...]
    pool: str
    concurrency: int
    autoscale: tuple[int, int] | None = None  # (min, max)

    def to_json(self) -> dict[str, Any]:
        """The lane as stored in the registry entry (``queues``, ``pool``, ``concurrency``,
        ``autoscale``)."""
        return {"queues": list(self.queues), "pool": self.pool,
                "concurrency": self.concurrency,
                "autoscale": None if self.autoscale is None else list(self.autoscale)}

    def describe(self) -> str:
        """``a,b=prefork:4`` with ``(2..8)`` when it autoscales."""
        text = f"{','.join(self.queues)}={self.pool}:{self.concurrency}"
        if self.autoscale is not None:
            text += f" ({self.autoscale[0]}..{self.autoscale[1]})"
        return text


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker's registry entry: who it is, what it serves, how it is doing.

    Times are epoch seconds; ``rss_mib`` is the worker process's resident memory (its pool's
    child processes not included), None where ``/proc`` is missing; ``load`` is the host's
    1, 5 and 15 minute load average. ``damaged`` marks an entry read with fields that were
    missing or of the wrong type (they hold defaults).
    """

    name: str
    host: str = ""
    pid: int = 0
    version: str = ""
    lanes: tuple[LaneEntry, ...] = ()
    started_at: float = 0.0
    heartbeat_at: float = 0.0
    processed: int = 0
    failed: int = 0
    running: int = 0
    rss_mib: float | None = None
    load: tuple[float, float, float] | None = None
    damaged: bool = field(default=False, compare=False)
    # What runs now, at most MAX_TASKS of it, longest-running first (``hubbub top``).
    tasks: tuple[RunningTask, ...] = ()

    @classmethod
    def here(cls, name: str, lanes: Sequence[LaneEntry], *, started_at: float,
             processed: int, failed: int, running: int,
             tasks: Sequence[RunningTask] = ()) -> WorkerInfo:
        """The entry of a worker in this process, measured now."""
        return cls(name, socket.gethostname(), os.getpid(), __version__, tuple(lanes),
                   started_at, time.time(), processed, failed, running, rss_mib(),
                   load_average(), tasks=tuple(tasks[:MAX_TASKS]))

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict (``damaged`` is not stored: it is how a reader saw it)."""
        return {"name": self.name, "host": self.host, "pid": self.pid,
                "version": self.version, "lanes": [lane.to_json() for lane in self.lanes],
                "started_at": self.started_at, "heartbeat_at": self.heartbeat_at,
                "processed": self.processed, "failed": self.failed, "running": self.running,
                "rss_mib": self.rss_mib, "load": None if self.load is None else list(self.load),
                "tasks": [task.to_json() for task in self.tasks]}

    @classmethod
    def from_json(cls, name: str, data: Any) -> WorkerInfo:
        """The entry stored under ``name``; never raises, whatever ``data`` holds.

        Args:
            name: the registry's name for the entry (it wins over a ``name`` field).
            data: what the store held, ideally a dict from :meth:`to_json`.
        """
        reader = _Reader(data if isinstance(data, dict) else {}, damaged=not isinstance(
            data, dict))
        lanes = tuple(lane for raw in reader.list("lanes") if (lane := reader.lane(raw)))
        load = reader.load()
        tasks = reader.tasks()
        return cls(name, reader.text("host"), reader.number("pid", int),
                   reader.text("version"), lanes, reader.number("started_at", float),
                   reader.number("heartbeat_at", float), reader.number("processed", int),
                   reader.number("failed", int), reader.number("running", int),
                   reader.optional_float("rss_mib"), load, reader.damaged, tasks)


@dataclass(frozen=True, slots=True)
class RunningTask:
    """A task a worker runs now: its id, name, and when it started (epoch seconds)."""

    id: str
    task: str
    started_at: float

    def to_json(self) -> list[Any]:
        return [self.id, self.task, self.started_at]


class _Reader:
    """Reads fields of an untrusted dict; a bad one gives a default and sets ``damaged``."""

    def __init__(self, data: dict[str, Any], *, damaged: bool) -> None:
        self.data = data
        self.damaged = damaged

    def text(self, key: str) -> str:
        value = self.data.get(key)
        if isinstance(value, str):
            return value
        self.damaged = True
        return ""

    def number(self, key: str, kind: type[N]) -> N:
        value = self.data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return kind(value)
            except (OverflowError, ValueError):  # inf or nan as an int
                pass
        self.damaged = True
        return kind(0)

    def optional_float(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        self.damaged = True
        return None

    def list(self, key: str) -> list[Any]:
        value = self.data.get(key)
        if isinstance(value, list):
            return value
        self.damaged = True
        return []

    def lane(self, raw: Any) -> LaneEntry | None:
        if not isinstance(raw, dict):
            self.damaged = True
            return None
        inner = _Reader(raw, damaged=False)
        queues = tuple(q for q in inner.list("queues") if isinstance(q, str))
        bounds = raw.get("autoscale")
        autoscale = None
        if (isinstance(bounds, list) and len(bounds) == 2
                and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)):
            autoscale = (bounds[0], bounds[1])
        elif bounds is not None:
            inner.damaged = True
        entry = LaneEntry(queues, inner.text("pool"), inner.number("concurrency", int),
                          autoscale)
        self.damaged = self.damaged or inner.damaged
        return entry

    def tasks(self) -> tuple[RunningTask, ...]:
        """The running tasks; missing (a worker before 0.3 writes none) is no damage."""
        value = self.data.get("tasks")
        if value is None:
            return ()
        if not isinstance(value, list):
            self.damaged = True
            return ()
        out = []
        for raw in value[:MAX_TASKS]:
            if (isinstance(raw, list) and len(raw) == 3 and isinstance(raw[0], str)
                    and isinstance(raw[1], str) and isinstance(raw[2], int | float)
                    and not isinstance(raw[2], bool)):
                out.append(RunningTask(raw[0], raw[1], float(raw[2])))
            else:
                self.damaged = True
        return tuple(out)

    def load(self) -> tuple[float, float, float] | None:
        value = self.data.get("load")
        if value is None:
            return None
        if (isinstance(value, list) and len(value) == 3
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
            return (float(value[0]), float(value[1]), float(value[2]))
        self.damaged = True
        return None


def rss_mib() -> float | None:
    """This process's resident memory in MiB, from ``/proc/self/statm``; None without it."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / _MIB, 1)


def load_average() -> tuple[float, float, float] | None:
    """The host's load average, or None where the platform has none."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return None
    return (round(one, 2), round(five, 2), round(fifteen, 2))


class Registry:
    """The worker registry in a connected result store.

    Args:
        results: the hub's result store (connected by the caller, who also closes it).
    """

    def __init__(self, results: ResultBackend) -> None:
        self.results = results

    async def announce(self, info: WorkerInfo, *, ttl: float) -> None:
        """Write ``info`` as its worker's entry, live for ``ttl`` seconds unless renewed.

        Raises:
            HubbubError: the store could not be written (as the store raised it).
        """
        await self.results.heartbeat(info.name, info.to_json(), ttl=ttl)

    async def workers(self) -> list[WorkerInfo]:
        """The live workers, sorted by name; malformed entries come back ``damaged``.

        Raises:
            HubbubError: the store could not be read (as the store raised it).
        """
        entries = await self.results.workers()
        return [WorkerInfo.from_json(name, entries[name]) for name in sorted(entries)]

    async def forget(self, name: str) -> None:
        """Delete worker ``name``'s entry.

        Raises:
            HubbubError: the store could not be written (as the store raised it).
        """
        await self.results.forget_worker(name)
