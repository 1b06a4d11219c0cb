"""Pickup latency (send -> task start) at a steady rate, and the idle CPU of the worker.

    python bench/latency.py                               # redis and sqlite, 3 runs
    python bench/latency.py --brokers redis --runs 5 --tasks 2000
    python bench/latency.py --baseline /tmp/hubbub-base   # old code's worker, same run

One ``hubbub worker --pool async`` process per run; this process sends ``--tasks`` no-op
tasks one by one at ``--rate`` tasks a second and reads each task's ``created_at`` (set by
the sender before encoding) and ``started_at`` (set by the worker as it hands the job to its
pool) from the result records: the figure includes encoding and publishing on the sender's
side. Then the worker is left idle for ``--idle`` seconds and the CPU it used meanwhile is
read from ``/proc`` (an idle worker must stay near 0 %).

``--baseline DIR`` runs the worker from another source tree (e.g. ``git archive`` of an older
commit unpacked in DIR) in turns with this tree's, so that both see the same load; the ratio
column is this tree over the baseline. Peers (Huey, Taskiq) are measured only where a
``--peers-python`` with them installed is given; none is needed for the rest. Figures are
medians of ``--runs`` runs. Not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from _common import cpu_seconds, delete_prefix, pending

from hubbub import Hub
from hubbub._loader import load_hub

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
APP = textwrap.dedent("""
    from hubbub import Hub
    hub = Hub()   # $HUBBUB_BROKER

    @hub.task(name="noop")
    async def noop() -> None:
        return None
""")


@dataclass(frozen=True)
class Sample:
    p50_ms: float
    p99_ms: float
    idle_cpu_pct: float


class Scratch:
    """A folder with the app, and a fresh broker URL (file or key prefix) per run."""

    def __init__(self, redis_url: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hubbub-latency-"))
        (self.dir / "latencyapp.py").write_text(APP)
        sys.path.insert(0, str(self.dir))
        self.redis_url = redis_url
        self.token = uuid.uuid4().hex[:8]
        self.count = 0

    def url(self, broker: str) -> str:
        self.count += 1
        if broker == "sqlite":
            return f"sqlite:///{self.dir / f'b{self.count}.db'}"
        return f"{self.redis_url}?prefix=latency-{self.token}-{self.count}"

    def hub(self, url: str) -> Hub:
        os.environ["HUBBUB_BROKER"] = url
        os.environ.pop("HUBBUB_RESULTS", None)  # results on: the records hold the times
        sys.modules.pop("latencyapp", None)
        return load_hub("latencyapp:hub")

    def done(self, url: str) -> None:
        if "prefix=" in url:
            delete_prefix(self.redis_url, url.rpartition("prefix=")[2])


def one_run(scratch: Scratch, broker: str, tree: Path, rate: float, n: int,
            idle: float) -> Sample:
    """Start a worker from ``tree``, send ``n`` tasks at ``rate``, then watch it idle."""
    url = scratch.url(broker)
    hub = scratch.hub(url)
    warm = hub.tasks["noop"].delay()  # connects the sender, creates the queue
    path = os.pathsep.join(filter(None, [str(scratch.dir), str(tree),
                                         os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HUBBUB_BROKER": url, "PYTHONPATH": path}
    proc = subprocess.Popen([sys.executable, "-m", "hubbub", "worker", "-A", "latencyapp:hub",
                             "--pool", "async", "-l", "error"], env=env, cwd=scratch.dir)
    try:
        warm.get(timeout=60)
        while pending(hub):
            time.sleep(0.01)
        sent = []
        next_at = time.perf_counter()
        for _ in range(n):
            next_at += 1 / rate
            time.sleep(max(0.0, next_at - time.perf_counter()))
            sent.append(hub.tasks["noop"].delay())
        for result in sent:
            result.get(timeout=60)
        records = hub.bridge.run(hub.read_results([r.id for r in sent]))
        waits = sorted((rec.started_at - rec.created_at) * 1000 for rec in records.values()
                       if rec.started_at and rec.created_at)
        time.sleep(0.5)  # the last acks and heartbeats settle before the idle window
        before, began = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle)
        used = cpu_seconds(proc.pid) - before
        idle_pct = 100 * used / (time.monotonic() - began)
    finally:
        proc.terminate()
        proc.wait(30)
        hub.close()
        scratch.done(url)
    return Sample(statistics.median(waits), waits[max(0, int(len(waits) * 0.99) - 1)], idle_pct)


def median(samples: list[Sample]) -> Sample:
    return Sample(statistics.median(s.p50_ms for s in samples),
                  statistics.median(s.p99_ms for s in samples),
                  statistics.median(s.idle_cpu_pct for s in samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brokers", default="redis,sqlite")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU watched")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another hubbub source tree to run the worker from, in turns")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    scratch = Scratch(args.redis_url)
    trees = {"this tree": TREE}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    load_at_start = os.getloadavg()
    rows = []
    for broker in args.brokers.split(","):
        samples: dict[str, list[Sample]] = {name: [] for name in trees}
        for i in range(args.runs):
            for name, tree in trees.items():  # in turns: a disturbance hits both alike
                sample = one_run(scratch, broker, tree, args.rate, args.tasks, args.idle)
                print(f"  {broker} {name} run {i + 1}/{args.runs}: p50 {sample.p50_ms:.2f} ms,"
                      f" p99 {sample.p99_ms:.2f} ms, idle CPU {sample.idle_cpu_pct:.2f} %,"
                      f" load {os.getloadavg()[0]:.2f}", flush=True)
                samples[name].append(sample)
        rows.append((broker, {name: median(s) for name, s in samples.items()}))
    print(f"\npickup latency at {args.rate:g} tasks/s, {args.tasks} tasks, --pool async, "
          f"median of {args.runs} runs, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    header = f"{'broker':8} {'worker':10} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>8} " \
             f"{'idle CPU %':>10} {'p50 ratio':>10} {'p99 ratio':>10}"
    print(header)
    print("-" * len(header))
    for broker, by_tree in rows:
        base = by_tree.get("baseline")
        for name, s in by_tree.items():
            r50 = f"{s.p50_ms / base.p50_ms:.2f}x" if base else ""
            r99 = f"{s.p99_ms / base.p99_ms:.2f}x" if base else ""
            print(f"{broker:8} {name:10} {s.p50_ms:8.2f} {s.p99_ms:8.2f} "
                  f"{s.p99_ms / s.p50_ms:7.1f}x {s.idle_cpu_pct:10.2f} {r50:>10} {r99:>10}")
    print(f"command: python bench/latency.py {' '.join(sys.argv[1:])}".rstrip())
    print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}, at end: "
          "{:.2f} {:.2f} {:.2f}".format(*load_at_start, *os.getloadavg()))


if __name__ == "__main__":
    main()
