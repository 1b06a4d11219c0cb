"""A ledger of what was submitted and what ran, kept outside hubbub, and a checker over it.

Every line is one small JSON object appended with a single ``os.write`` on an ``O_APPEND``
descriptor: writes under ``PIPE_BUF`` bytes are atomic, so lines from any number of processes
(producer, workers, prefork children) never interleave. Nothing here imports hubbub: the
ledger judges the queue, it must not trust it.

Events:
    submit      the producer's publish of ``key`` returned (confirmed); ``id``, ``eta`` given
    unconfirmed the producer's publish of ``key`` raised; the key may or may not exist
    start       a task began running ``key`` (in process ``pid``)
    done        that run finished its work (the task returns right after)
    fault       the test injected a fault (``key`` names it) at this instant
    dead        the test found ``key`` in dead letters or FAILED for good (kept, not lost)

Times: ``mono`` is ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process on the
machine, used for durations); ``epoch`` is ``time.time()`` (compared with ETAs).
"""

from __future__ import annotations

import json
import os
import select
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PIPE_BUF = getattr(select, "PIPE_BUF", 4096)

_fds: dict[tuple[str, int], int] = {}  # (path, pid) -> descriptor; a forked child opens its own


def record(path: str | os.PathLike[str], event: str, key: str, **extra: Any) -> float:
    """Append one line; atomic across processes. Returns its monotonic time.

    Raises:
        ValueError: the line would be ``PIPE_BUF`` bytes or longer (it could interleave).
    """
    mono = time.monotonic()
    line = json.dumps({"e": event, "k": key, "p": os.getpid(), "m": mono,
                       "t": time.time(), **extra}, separators=(",", ":")).encode() + b"\n"
    if len(line) >= PIPE_BUF:
        raise ValueError(f"ledger line of {len(line)} bytes is not atomic (PIPE_BUF {PIPE_BUF})")
    where = (os.fspath(path), os.getpid())
    fd = _fds.get(where)
    if fd is None:
        fd = _fds[where] = os.open(where[0], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line)
    return mono


@dataclass(frozen=True, slots=True)
class Entry:
    event: str
    key: str
    pid: int
    mono: float
    epoch: float
    extra: dict[str, Any]


@dataclass
class Report:
    """What the ledger says about one run.

    Attributes:
        submitted: keys whose publish was confirmed.
        unconfirmed: keys whose publish raised (not counted as lost when missing).
        completed: distinct keys with a ``done`` line.
        dead: keys the test found settled for good without a ``done``: in dead letters, or
            with a FAILURE result.
        lost: confirmed keys never done and not in dead letters.
        duplicated: keys done more than once, with how many times.
        unexpected: keys done that were never submitted (confirmed or not).
        runs: ``start`` lines per key.
        recovery: seconds from the (first) fault to the next ``done`` after it; None when
            there was no fault or nothing finished after it.
    """

    submitted: set[str]
    unconfirmed: set[str]
    completed: set[str]
    dead: set[str]
    lost: set[str]
    duplicated: dict[str, int]
    unexpected: set[str]
    runs: Counter[str]
    recovery: float | None
    entries: list[Entry] = field(repr=False)

    def in_flight_at(self, mono: float, pid: int | None = None) -> set[str]:
        """Keys started (by ``pid``, if given) at or before ``mono`` and not done by then."""
        started = {e.key for e in self.entries
                   if e.event == "start" and e.mono <= mono and pid in (None, e.pid)}
        done = {e.key for e in self.entries if e.event == "done" and e.mono <= mono}
        return started - done

    def unfinished_by(self, pid: int) -> set[str]:
        """Keys process ``pid`` started and did not finish (all it had running when it died)."""
        return ({e.key for e in self.entries if e.event == "start" and e.pid == pid}
                - {e.key for e in self.entries if e.event == "done" and e.pid == pid})

    def started_by(self, pid: int, before: float | None = None) -> set[str]:
        return {e.key for e in self.entries if e.event == "start" and e.pid == pid
                and (before is None or e.mono <= before)}

    def first(self, event: str, key: str) -> Entry | None:
        return next((e for e in self.entries if e.event == event and e.key == key), None)

    def of(self, event: str, key: str | None = None) -> list[Entry]:
        return [e for e in self.entries if e.event == event and key in (None, e.key)]


class Ledger:
    """One run's ledger file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def __str__(self) -> str:
        return str(self.path)

    def write(self, event: str, key: str, **extra: Any) -> float:
        return record(self.path, event, key, **extra)

    def fault(self, name: str) -> float:
        """Mark the instant a fault is injected (just before it is); returns it (monotonic)."""
        return self.write("fault", name)

    def submitted(self, keys: Iterable[str], ids: Iterable[str] | None = None,
                  etas: Iterable[float | None] | None = None, *, confirmed: bool = True) -> None:
        keys = list(keys)
        ids = list(ids) if ids is not None else [None] * len(keys)
        etas = list(etas) if etas is not None else [None] * len(keys)
        for key, id_, eta in zip(keys, ids, etas, strict=True):
            self.write("submit" if confirmed else "unconfirmed", key, id=id_, eta=eta)

    def close(self) -> None:
        """Close this process's descriptor for the file (workers' close when they exit)."""
        fd = _fds.pop((str(self.path), os.getpid()), None)
        if fd is not None:
            os.close(fd)

    def entries(self) -> list[Entry]:
        out = []
        with open(self.path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # a line being written right now; read it next time
                d = json.loads(raw)
                out.append(Entry(d.pop("e"), d.pop("k"), d.pop("p"), d.pop("m"), d.pop("t"), d))
        return out

    def count(self, event: str, key: str | None = None) -> int:
        return sum(1 for e in self.entries() if e.event == event and key in (None, e.key))

    def distinct(self, event: str) -> set[str]:
        return {e.key for e in self.entries() if e.event == event}

    def check(self) -> Report:
        entries = self.entries()
        submitted = {e.key for e in entries if e.event == "submit"}
        unconfirmed = {e.key for e in entries if e.event == "unconfirmed"} - submitted
        dones = Counter(e.key for e in entries if e.event == "done")
        runs = Counter(e.key for e in entries if e.event == "start")
        completed = set(dones)
        dead = {e.key for e in entries if e.event == "dead"}
        faults = [e.mono for e in entries if e.event == "fault"]
        recovery = None
        if faults:
            after = [e.mono for e in entries if e.event == "done" and e.mono > faults[0]]
            recovery = min(after) - faults[0] if after else None
        return Report(
            submitted=submitted, unconfirmed=unconfirmed, completed=completed, dead=dead,
            lost=submitted - completed - dead,
            duplicated={k: n for k, n in dones.items() if n > 1},
            unexpected=completed - submitted - unconfirmed,
            runs=runs, recovery=recovery, entries=entries,
        )


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.02) -> float:
    """Poll ``check`` until true; returns the seconds it took.

    Raises:
        AssertionError: not true within ``timeout`` seconds.
    """
    start = time.monotonic()
    deadline = start + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - start
