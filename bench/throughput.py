"""Throughput and pickup latency of no-op tasks: hubbub against a peer in the same run.

    python bench/throughput.py                      # sqlite + memory, Huey as the peer
    python bench/throughput.py --brokers sqlite --runs 5 --tasks 50000

Peers are installed by bench/setup_peers.sh into bench/.venv-peers (run it once; without it
the peer rows are left out and said so). Figures are medians of --runs runs; each drain
figure includes starting the worker processes. Not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hubbub import Hub, WorkerLoop
from hubbub._loader import load_hub

HERE = Path(__file__).resolve().parent
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
APP = textwrap.dedent("""
    from hubbub import Hub
    hub = Hub()   # $HUBBUB_BROKER

    @hub.task(name="noop")
    async def noop() -> None:
        return None

    @hub.task(name="noop_sync")
    def noop_sync() -> None:
        return None
""")
console = Console()


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


class Scratch:
    """A folder with the benchmark app and a fresh broker URL per measurement."""

    def __init__(self, broker: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hubbub-bench-"))
        (self.dir / "benchapp.py").write_text(APP)
        sys.path.insert(0, str(self.dir))
        self.broker = broker
        self.count = 0

    def url(self) -> str:
        self.count += 1
        if self.broker == "sqlite":
            return f"sqlite:///{self.dir / f'b{self.count}.db'}"
        return f"memory://bench{self.count}"

    def hub(self, url: str) -> Hub:
        os.environ["HUBBUB_BROKER"] = url
        sys.modules.pop("benchapp", None)
        return load_hub("benchapp:hub")


def enqueue_single(scratch: Scratch, n: int) -> float:
    hub = scratch.hub(scratch.url())
    task = hub.tasks["noop"]
    task.delay()  # connect first
    started = time.perf_counter()
    for _ in range(n):
        task.delay()
    rate = n / (time.perf_counter() - started)
    hub.close()
    return rate


def enqueue_bulk(scratch: Scratch, n: int) -> float:
    hub = scratch.hub(scratch.url())
    task = hub.tasks["noop"]
    task.delay()
    started = time.perf_counter()
    for start in range(0, n, 1000):
        task.delay_many([()] * min(1000, n - start))
    rate = n / (time.perf_counter() - started)
    hub.close()
    return rate


def pending(hub: Hub) -> int:
    async def read() -> int:
        client = await hub.client()
        stats = await client.transport.stats(["default"])
        return sum(s.ready + s.leased + s.delayed for s in stats)

    return hub.bridge.run(read())


def fill(hub: Hub, task: str, n: int) -> None:
    for start in range(0, n, 1000):
        hub.tasks[task].delay_many([()] * min(1000, n - start))


def drain_processes(scratch: Scratch, n: int, workers: int, pool: str, task: str) -> float:
    url = scratch.url()
    hub = scratch.hub(url)
    fill(hub, task, n)
    env = {**os.environ, "HUBBUB_BROKER": url, "PYTHONPATH": str(scratch.dir)}
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "hubbub", "worker", "-A", "benchapp:hub",
                               "--pool", pool, "-l", "error"], env=env, cwd=scratch.dir)
             for _ in range(workers)]
    try:
        deadline = time.monotonic() + 300
        while pending(hub) and time.monotonic() < deadline:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        hub.close()
    return n / elapsed


def drain_in_process(scratch: Scratch, n: int, task: str) -> float:
    hub = scratch.hub(scratch.url())
    fill(hub, task, n)
    started = time.perf_counter()
    asyncio.run(WorkerLoop(hub, stop_when_idle=True).run())
    elapsed = time.perf_counter() - started
    hub.close()
    return n / elapsed


def pickup_latency(scratch: Scratch, rate: float, n: int) -> tuple[float, float]:
    """p50 and p99 milliseconds from send to start, sending ``rate`` tasks a second."""
    url = scratch.url()
    hub = scratch.hub(url)
    hub.tasks["noop"].delay()
    env = {**os.environ, "HUBBUB_BROKER": url, "PYTHONPATH": str(scratch.dir)}
    proc = subprocess.Popen([sys.executable, "-m", "hubbub", "worker", "-A", "benchapp:hub",
                             "-l", "error"], env=env, cwd=scratch.dir)
    try:
        while pending(hub):
            time.sleep(0.01)
        results = []
        next_at = time.perf_counter()
        for _ in range(n):
            next_at += 1 / rate
            time.sleep(max(0.0, next_at - time.perf_counter()))
            results.append(hub.tasks["noop"].delay())
        for r in results:
            r.get(timeout=30)
        records = hub.bridge.run(hub.read_results([r.id for r in results]))
        waits = sorted((rec.started_at - rec.created_at) * 1000 for rec in records.values()
                       if rec.started_at and rec.created_at)
    finally:
        proc.terminate()
        proc.wait(30)
        hub.close()
    return statistics.median(waits), waits[int(len(waits) * 0.99) - 1]


def huey(mode: str, n: int) -> float | None:
    if not PEERS_PYTHON.exists():
        return None
    folder = tempfile.mkdtemp(prefix="huey-bench-")
    out = subprocess.run([str(PEERS_PYTHON), str(HERE / "peers" / "huey_sqlite.py"), mode,
                          str(n)], env={**os.environ, "HUEY_DB": f"{folder}/h.db"},
                         capture_output=True, text=True, timeout=600, check=True)
    value: float = next(iter(json.loads(out.stdout.strip().splitlines()[-1]).values()))
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brokers", default="sqlite,memory")
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n, runs = args.tasks, args.runs
    rows: list[tuple[str, str, float | None, float | None, str]] = []
    for broker in args.brokers.split(","):
        scratch = Scratch(broker)
        single = median_of(runs, lambda: enqueue_single(scratch, min(n, 5000)))
        bulk = median_of(runs, lambda: enqueue_bulk(scratch, n))
        if broker == "sqlite":
            peer_single = median_of(runs, lambda: huey("enqueue", min(n, 5000))) \
                if PEERS_PYTHON.exists() else None
            rows.append(("sqlite", "enqueue, one by one (/s)", single, peer_single, "Huey"))
            rows.append(("sqlite", "enqueue, bulk (/s)", bulk, None, ""))
            for workers, pool, task in ((2, "async", "noop"), (2, "threads", "noop_sync"),
                                        (1, "async", "noop")):
                rate = median_of(runs, lambda w=workers, p=pool, t=task:
                                 drain_processes(scratch, n, w, p, t))
                peer = None
                if workers == 2 and task == "noop" and PEERS_PYTHON.exists():
                    peer = median_of(runs, lambda: huey("drain", n))
                rows.append(("sqlite", f"drain, {workers} worker(s) --pool {pool} (/s)", rate,
                             peer, "Huey -k process -w 2" if peer else ""))
            p50, p99 = pickup_latency(scratch, 200, 1000)
            rows.append(("sqlite", "pickup p50 at 200 tasks/s (ms)", p50, None, ""))
            rows.append(("sqlite", "pickup p99 at 200 tasks/s (ms)", p99, None, ""))
        else:
            rows.append((broker, "enqueue, one by one (/s)", single, None, ""))
            rows.append((broker, "enqueue, bulk (/s)", bulk, None, ""))
            rate = median_of(runs, lambda: drain_in_process(scratch, n, "noop"))
            rows.append((broker, "drain, 1 in-process worker (/s)", rate, None, ""))
    table = Table(title=f"hubbub throughput — {n} no-op tasks, median of {runs} runs, "
                        f"{os.cpu_count()} cores, Python {platform.python_version()}")
    for column in ("broker", "measure", "hubbub", "peer", "ratio", "peer is"):
        table.add_column(column, justify="right" if column in {"hubbub", "peer", "ratio"}
                         else "left")
    for broker, what, ours, theirs, peer_name in rows:
        ratio = f"{ours / theirs:.1f}x" if ours and theirs else ""
        table.add_row(broker, what, f"{ours:,.1f}" if ours is not None else "-",
                      f"{theirs:,.1f}" if theirs else "-", ratio, peer_name)
    console.print(table)
    console.print(f"command: python bench/throughput.py {' '.join(sys.argv[1:])}".rstrip())
    if not PEERS_PYTHON.exists():
        console.print("peers not installed: run bench/setup_peers.sh for the peer columns")


if __name__ == "__main__":
    main()
