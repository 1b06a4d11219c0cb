"""Throughput and pickup latency of no-op tasks: hubbub against a peer in the same run.

    python bench/throughput.py                      # sqlite + memory, Huey as the peer
    python bench/throughput.py --brokers sqlite --runs 5 --tasks 50000
    python bench/throughput.py --brokers redis      # Celery and Dramatiq as the peers

Peers are installed by bench/setup_peers.sh into bench/.venv-peers (run it once; without it
the peer rows are left out and said so). Figures are medians of --runs runs; each drain
figure includes starting the worker processes. Not a test: nothing here asserts timings.

``--brokers redis`` uses the Redis at --redis-url (default redis://127.0.0.1:6379/0): every
measurement, hubbub's and the peers', gets a key prefix of its own and deletes its keys
afterwards; nothing is flushed. It measures enqueue one by one and in bulk, the drain of
no-op tasks by ``--pool async`` and (when the prefork pool exists) ``--pool prefork -c 2``
workers, and pickup latency at 200 tasks/s. The peers drain the same number of no-op tasks
on the same Redis: Celery (``celery worker --pool prefork -c 2``, acks on receipt, its
default, then acks_late=True) and Dramatiq (``dramatiq -p 1 -t 8`` and ``-p 2 -t 8``).
Results are off on both sides in the drains (neither peer keeps results by default); the
pickup latency, hubbub only, reads send and start times from hubbub's result records.
hubbub's and the peers' runs are taken in turns, so other work on the machine disturbs both
alike; the load average at the start and the end is printed under the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import extra_brokers
import report
from _common import delete_prefix, pending
from _common import in_turns as alternating
from rich.console import Console
from rich.table import Table

from hubbub import Hub, WorkerLoop
from hubbub._loader import load_hub
from hubbub.worker.pools import POOLS

HERE = Path(__file__).resolve().parent
PEERS_PYTHON = report.PEERS_PYTHON
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
    """A folder with the benchmark app and a fresh broker URL per measurement.

    On Redis a fresh URL is a fresh key prefix; ``done(url)`` deletes that prefix's keys.
    """

    def __init__(self, broker: str, redis_url: str = "redis://127.0.0.1:6379/0") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hubbub-bench-"))
        (self.dir / "benchapp.py").write_text(APP)
        sys.path.insert(0, str(self.dir))
        self.broker = broker
        self.redis_url = redis_url
        self.token = uuid.uuid4().hex[:8]
        self.count = 0
        self.results_env = os.environ.get("HUBBUB_RESULTS")

    def url(self) -> str:
        self.count += 1
        if self.broker == "sqlite":
            return f"sqlite:///{self.dir / f'b{self.count}.db'}"
        if self.broker == "redis":
            return f"{self.redis_url}?prefix={self.prefix()}"
        return f"memory://bench{self.count}"

    def prefix(self, owner: str = "hubbub") -> str:
        """A key prefix no one else uses: who, this run, and the measurement's number."""
        return f"{owner}-bench-{self.token}-{self.count}"

    def hub(self, url: str, results: str | None = None) -> Hub:
        """Load the app on ``url``; ``results="none"`` turns the result store off (also for
        the workers started afterwards, which inherit the environment)."""
        os.environ["HUBBUB_BROKER"] = url
        chosen = results if results is not None else self.results_env
        if chosen is None:
            os.environ.pop("HUBBUB_RESULTS", None)
        else:
            os.environ["HUBBUB_RESULTS"] = chosen
        sys.modules.pop("benchapp", None)
        return load_hub("benchapp:hub")

    def pythonpath(self) -> str:
        """For the workers: the app's folder, then whatever PYTHONPATH the caller set."""
        return os.pathsep.join(filter(None, [str(self.dir), os.environ.get("PYTHONPATH")]))

    def done(self, url: str) -> None:
        """Delete what one measurement left in Redis (its prefix only); elsewhere nothing."""
        if self.broker == "redis":
            delete_prefix(self.redis_url, url.rpartition("prefix=")[2])


def enqueue_single(scratch: Scratch, n: int) -> float:
    url = scratch.url()
    hub = scratch.hub(url)
    try:
        task = hub.tasks["noop"]
        task.delay()  # connect first
        started = time.perf_counter()
        for _ in range(n):
            task.delay()
        return n / (time.perf_counter() - started)
    finally:
        hub.close()
        scratch.done(url)


def enqueue_bulk(scratch: Scratch, n: int) -> float:
    url = scratch.url()
    hub = scratch.hub(url)
    try:
        task = hub.tasks["noop"]
        task.delay()
        started = time.perf_counter()
        for start in range(0, n, 1000):
            task.delay_many([()] * min(1000, n - start))
        return n / (time.perf_counter() - started)
    finally:
        hub.close()
        scratch.done(url)


def fill(hub: Hub, task: str, n: int) -> None:
    for start in range(0, n, 1000):
        hub.tasks[task].delay_many([()] * min(1000, n - start))


def drain_processes(scratch: Scratch, n: int, workers: int, pool: str, task: str,
                    concurrency: int | None = None, results: str | None = None) -> float:
    url = scratch.url()
    hub = scratch.hub(url, results)
    fill(hub, task, n)
    env = {**os.environ, "HUBBUB_BROKER": url, "PYTHONPATH": scratch.pythonpath()}
    extra = [] if concurrency is None else ["-c", str(concurrency)]
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "hubbub", "worker", "-A", "benchapp:hub",
                               "--pool", pool, *extra, "-l", "error"], env=env, cwd=scratch.dir)
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
        scratch.done(url)
    return n / elapsed


def drain_in_process(scratch: Scratch, n: int, task: str) -> float:
    hub = scratch.hub(scratch.url())
    fill(hub, task, n)
    started = time.perf_counter()
    asyncio.run(WorkerLoop(hub, stop_when_idle=True).run())
    elapsed = time.perf_counter() - started
    hub.close()
    return n / elapsed


def pickup_latency(scratch: Scratch, rate: float, n: int, pool: str = "async"
                   ) -> tuple[float, float]:
    """p50 and p99 milliseconds from send to start, sending ``rate`` tasks a second to one
    worker with ``--pool pool``."""
    url = scratch.url()
    hub = scratch.hub(url)
    hub.tasks["noop"].delay()
    env = {**os.environ, "HUBBUB_BROKER": url, "PYTHONPATH": scratch.pythonpath()}
    proc = subprocess.Popen([sys.executable, "-m", "hubbub", "worker", "-A", "benchapp:hub",
                             "--pool", pool, "-l", "error"], env=env, cwd=scratch.dir)
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
        scratch.done(url)
    return statistics.median(waits), waits[int(len(waits) * 0.99) - 1]


def run_peer(script: str, *args: str, env: dict[str, str]) -> float:
    """Run the peer driver ``bench/peers/<script>`` (bench/report.py runs every driver);
    its rate, counting the worker's start-up in a drain as the hubbub side here does."""
    line = report.run_driver(script, args, env, hubbub=False, timeout=900)
    return line.get("rate_with_start", line["rate"])


def huey(mode: str, n: int) -> float | None:
    if not PEERS_PYTHON.exists():
        return None
    # The driver makes the SQLite folder and deletes it when it ends.
    return run_peer("huey_peer.py", mode, str(n),
                    env={"BENCH_BROKER": "sqlite",
                         "BENCH_PREFIX": f"hbbhuey{uuid.uuid4().hex[:8]}"})


def redis_peer(scratch: Scratch, script: str, *args: str) -> Callable[[], float | None]:
    """One run of a Redis peer under a prefix of its own (the script deletes its keys);
    None when the peers are not installed or the run failed (said so, the rest goes on)."""

    def measure() -> float | None:
        if not PEERS_PYTHON.exists():
            return None
        scratch.count += 1
        owner = script.partition("_")[0]
        prefix = scratch.prefix(owner)
        try:
            return run_peer(script, *args, env={"BENCH_REDIS": scratch.redis_url,
                                                "BENCH_PREFIX": prefix})
        except RuntimeError as exc:
            console.print(f"[red]peer run left out[/red]: {exc}")
            return None

    return measure


Row = tuple[str, str, float | None, float | None, str]


def redis_rows(scratch: Scratch, n: int, runs: int) -> list[Row]:
    """hubbub on Redis next to Celery and Dramatiq on the same Redis, in the same run."""
    few = min(n, 5000)
    single, celery_single, dramatiq_single = alternating(
        runs, lambda: enqueue_single(scratch, few),
        redis_peer(scratch, "celery_redis.py", "enqueue", str(few)),
        redis_peer(scratch, "dramatiq_redis.py", "enqueue", str(few)))
    [bulk] = alternating(runs, lambda: enqueue_bulk(scratch, n))
    # Drains: results off on both sides (neither peer keeps results by default).
    one_async, dramatiq_one = alternating(
        runs, lambda: drain_processes(scratch, n, 1, "async", "noop", results="none"),
        redis_peer(scratch, "dramatiq_redis.py", "drain", str(n), "--pool", "p1t8"))
    two_async, dramatiq_two = alternating(
        runs, lambda: drain_processes(scratch, n, 2, "async", "noop", results="none"),
        redis_peer(scratch, "dramatiq_redis.py", "drain", str(n), "--pool", "p2t8"))
    celery = (redis_peer(scratch, "celery_redis.py", "drain", str(n)),
              redis_peer(scratch, "celery_redis.py", "drain", str(n), "--pool",
                         "prefork-acks-late"))
    if "prefork" in POOLS:
        what = "drain, 1 worker --pool prefork -c 2, sync no-op (/s)"
        prefork, celery_early, celery_late = alternating(
            runs, lambda: drain_processes(scratch, n, 1, "prefork", "noop_sync",
                                          concurrency=2, results="none"), *celery)
    else:
        what = "drain, --pool prefork -c 2: no prefork pool yet"
        prefork = None
        celery_early, celery_late = alternating(runs, *celery)
    latencies = [pickup_latency(scratch, 200, 1000) for _ in range(runs)]
    return [
        ("redis", "enqueue, one by one (/s)", single, celery_single, "Celery delay()"),
        ("redis", "enqueue, one by one (/s)", single, dramatiq_single, "Dramatiq send()"),
        ("redis", "enqueue, bulk (/s)", bulk, None, ""),
        ("redis", "drain, 1 worker --pool async, async no-op (/s)", one_async, dramatiq_one,
         "Dramatiq -p 1 -t 8"),
        ("redis", "drain, 2 workers --pool async, async no-op (/s)", two_async, dramatiq_two,
         "Dramatiq -p 2 -t 8"),
        ("redis", what, prefork, celery_early, "Celery --pool prefork -c 2"),
        ("redis", what, prefork, celery_late, "Celery --pool prefork -c 2, acks_late"),
        ("redis", "pickup p50 at 200 tasks/s, --pool async (ms)",
         statistics.median(p50 for p50, _ in latencies), None, ""),
        ("redis", "pickup p99 at 200 tasks/s, --pool async (ms)",
         statistics.median(p99 for _, p99 in latencies), None, ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brokers", default="sqlite,memory")
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0",
                        help="the Redis for --brokers redis (no query; prefixes are added)")
    args = parser.parse_args()
    n, runs = args.tasks, args.runs
    load_at_start = os.getloadavg()
    rows: list[Row] = []
    brokers = args.brokers.split(",")
    if {"amqp", "beanstalk"} & set(brokers):
        # RabbitMQ and Beanstalkd rows (Celery on RabbitMQ as the peer): bench/extra_brokers.py
        rows += [row for row in extra_brokers.rows(runs, n) if row[0] in brokers]
    for broker in (b for b in brokers if b not in {"amqp", "beanstalk"}):
        scratch = Scratch(broker, args.redis_url)
        if broker == "redis":
            rows += redis_rows(scratch, n, runs)
            continue
        single = median_of(runs, lambda s=scratch: enqueue_single(s, min(n, 5000)))
        bulk = median_of(runs, lambda s=scratch: enqueue_bulk(s, n))
        if broker == "sqlite":
            peer_single = median_of(runs, lambda: huey("enqueue", min(n, 5000))) \
                if PEERS_PYTHON.exists() else None
            rows.append(("sqlite", "enqueue, one by one (/s)", single, peer_single, "Huey"))
            rows.append(("sqlite", "enqueue, bulk (/s)", bulk, None, ""))
            for workers, pool, task in ((2, "async", "noop"), (2, "threads", "noop_sync"),
                                        (1, "async", "noop")):
                rate = median_of(runs, lambda w=workers, p=pool, t=task, s=scratch:
                                 drain_processes(s, n, w, p, t))
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
            rate = median_of(runs, lambda s=scratch: drain_in_process(s, n, "noop"))
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
    console.print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}, at end: "
                  "{:.2f} {:.2f} {:.2f}".format(*load_at_start, *os.getloadavg()))
    if "redis" in args.brokers.split(","):
        console.print("redis: results off on both sides in the drains; pickup latency with "
                      "results on (read from the records); peers in bench/peers/*_redis.py")
    if not PEERS_PYTHON.exists():
        console.print("peers not installed: run bench/setup_peers.sh for the peer columns")


if __name__ == "__main__":
    main()
