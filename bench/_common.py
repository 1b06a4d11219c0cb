"""What several benches do alike: clean a Redis prefix, count a hub's unfinished messages,
take measures in turns, and read a process's CPU time and memory from /proc.

Imported by name (``import _common``): ``python bench/x.py`` puts ``bench/`` on the path.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")


def delete_prefix(redis_url: str, prefix: str) -> None:
    """UNLINK ``<prefix>:...`` and ``{<prefix>:...`` (hubbub's per-queue hash tags), only."""
    import redis  # hubbub[redis]; only the redis rows need it

    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    with redis.Redis.from_url(redis_url) as client:
        for pattern in (f"{escaped}:*", f"{{{escaped}:*"):
            keys = list(client.scan_iter(match=pattern, count=500))
            for start in range(0, len(keys), 500):
                client.unlink(*keys[start : start + 500])


def pending(hub: Any) -> int:
    """Messages of ``hub``'s default queue not yet finished (ready, leased or delayed)."""

    async def read() -> int:
        client = await hub.client()
        stats = await client.transport.stats(["default"])
        return sum(s.ready + s.leased + s.delayed for s in stats)

    return int(hub.bridge.run(read()))


def in_turns(runs: int, *measures: Callable[[], float | None]) -> list[float | None]:
    """The median of each measure over ``runs`` rounds, taken in turns (a, b, a, b, ...),
    so that a disturbance from other work on the machine hits every side alike. A measure
    that returns None (it could not run) is left out of its median."""
    samples: list[list[float]] = [[] for _ in measures]
    for _ in range(runs):
        for sample, measure in zip(samples, measures, strict=True):
            value = measure()
            if value is not None:
                sample.append(value)
    return [statistics.median(s) if s else None for s in samples]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def proc_kib(pid: int, field: str, path: str = "status") -> int:
    """``field`` (``VmRSS``, ``VmHWM``, ``Pss``...) of ``/proc/<pid>/<path>``, in KiB; 0 once
    the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
