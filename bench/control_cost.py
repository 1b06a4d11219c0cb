"""What remote control costs a worker that nobody steers: the no-op drain and the idle CPU of
a worker with its control responder on and off, in the same run, taken in turns.

    python bench/control_cost.py                          # sqlite and redis
    python bench/control_cost.py --brokers sqlite --tasks 5000 --runs 5 --idle 5

"off" is the same worker with its responder left out (``open_control`` returning None), as
on a broker that carries no control plane. Each drain runs an in-process worker
(async pool, 100 slots) until the queue is empty; idle CPU is the process's CPU seconds over
``--idle`` seconds of a worker with nothing to do. Not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from throughput import delete_prefix

import hubbub.worker.loop as worker_loop
from hubbub import Hub, WorkerLoop
from hubbub.worker.pools import make_pool

console = Console()


REDIS = "redis://127.0.0.1:6379/0"


@contextmanager
def scratch_hub(kind: str, folder: Path) -> Iterator[Hub]:
    """A hub on a fresh SQLite file or Redis key prefix (deleted afterwards), no results."""
    prefix = f"benchctl{uuid.uuid4().hex[:8]}"
    url = (f"sqlite:///{folder / f'{prefix}.db'}" if kind == "sqlite"
           else f"{REDIS}?prefix={prefix}")
    hub = Hub(url, results="none")
    try:
        yield hub
    finally:
        hub.close()
        if kind == "redis":
            delete_prefix(REDIS, prefix)


@contextmanager
def responder(on: bool) -> Iterator[None]:
    """With ``on`` false, the worker opens no control plane (``open_control`` says None)."""
    original = worker_loop.open_control
    if not on:
        async def no_control(worker: WorkerLoop) -> None:
            return None

        worker_loop.open_control = no_control  # type: ignore[assignment]
    try:
        yield
    finally:
        worker_loop.open_control = original


def drain(kind: str, folder: Path, tasks: int, on: bool) -> float:
    with scratch_hub(kind, folder) as hub:

        @hub.task(name="noop")
        async def noop() -> None:
            return None

        for start in range(0, tasks, 1000):
            noop.delay_many([()] * min(1000, tasks - start))
        worker = WorkerLoop(hub, pool=make_pool("async", 100), stop_when_idle=True)
        with responder(on):
            began = time.perf_counter()
            asyncio.run(worker.run())
            return tasks / (time.perf_counter() - began)


def idle_cpu(kind: str, folder: Path, seconds: float, on: bool) -> float:
    with scratch_hub(kind, folder) as hub, responder(on):
        return asyncio.run(_idle(WorkerLoop(hub, pool=make_pool("async", 100)), seconds))


async def _idle(worker: WorkerLoop, seconds: float) -> float:

    running = asyncio.create_task(worker.run())
    await asyncio.sleep(1.0)  # started and settled
    cpu = time.process_time()
    await asyncio.sleep(seconds)
    used = time.process_time() - cpu
    worker.stop()
    await running
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="sqlite,redis")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hubbub-bench-control-"))
    table = Table(title=f"remote control: cost to a worker nobody steers ({args.runs} runs, "
                        "medians)")
    for column in ("broker", "responder", "no-op drain (tasks/s)", "idle CPU (s per 10 s)"):
        table.add_column(column)
    for kind in args.brokers.split(","):
        found: dict[bool, dict[str, list[float]]] = {True: {"d": [], "i": []},
                                                    False: {"d": [], "i": []}}
        for _ in range(args.runs):
            for on in (True, False):  # in turns: other load disturbs both alike
                found[on]["d"].append(drain(kind, folder, args.tasks, on))
                found[on]["i"].append(idle_cpu(kind, folder, args.idle, on) * 10 / args.idle)
        for on in (True, False):
            figures: Any = found[on]
            table.add_row(kind, "on" if on else "off",
                          f"{statistics.median(figures['d']):,.0f}",
                          f"{statistics.median(figures['i']):.3f}")
    console.print(table)


if __name__ == "__main__":
    main()
