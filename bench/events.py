"""What events on the wire cost a worker: the no-op drain with events on against off.

    python bench/events.py                          # sqlite and redis, 20,000 tasks, 3 runs
    python bench/events.py --brokers sqlite,redis,amqp,beanstalk --tasks 50000 --runs 5

Each run fills a fresh queue with no-op tasks and drains it with one in-process worker
(``WorkerLoop(stop_when_idle=True)``, the async pool: the fastest drain, so the one where
the events' cost shows most), once with ``events=True`` and once without, in turns (on, off,
on, off, ...) so that other work on the machine disturbs both alike. With events on, every
task makes three events (received, started, succeeded) that the worker publishes on the
plane in batches; ``--reader`` also runs a subscriber that reads them all, in another
process. Results are off (``--results`` keeps them). Prints the median rate of each side and
the ratio on/off, and the median CPU time the process spent per 1,000 tasks (less disturbed
by other work on a busy machine than the rate). Not a test: nothing here asserts timings.

Redis gets a key prefix per measurement, deleted afterwards; nothing is flushed. RabbitMQ
and Beanstalkd get a prefix per measurement too (Beanstalkd keeps its events in an SQLite
result store of the run's).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hubbub import Hub, WorkerLoop

console = Console()
REDIS = "redis://127.0.0.1:6379/0"
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
BEANSTALK = "beanstalk://127.0.0.1:11300/"
READER = """
import asyncio, sys
from hubbub.control.planes import open_plane

async def main() -> None:
    plane = open_plane(sys.argv[1], sys.argv[2] if sys.argv[2] != "-" else None)
    await plane.connect()
    sub = await plane.subscribe("events")
    print("ready", flush=True)
    while True:
        await sub.read(wait=0.5)

asyncio.run(main())
"""


class Site:
    """Fresh broker namespaces on one broker, one per measurement, removed after it."""

    def __init__(self, broker: str, folder: Path) -> None:
        self.broker = broker
        self.folder = folder
        self.token = uuid.uuid4().hex[:8]
        self.count = 0

    def urls(self) -> tuple[str, str | None]:
        """A fresh (broker, results) pair; results None: the broker's default or none."""
        self.count += 1
        prefix = f"bench-events-{self.token}-{self.count}"
        if self.broker == "sqlite":
            return f"sqlite:///{self.folder / f'b{self.count}.db'}", None
        if self.broker == "redis":
            return f"{REDIS}?prefix={prefix}", None
        if self.broker == "amqp":
            return f"{AMQP}?prefix={prefix}", None
        if self.broker == "beanstalk":
            return (f"{BEANSTALK}?prefix={prefix}",
                    f"sqlite:///{self.folder / f'r{self.count}.db'}")
        raise SystemExit(f"unknown broker {self.broker!r}: sqlite, redis, amqp or beanstalk")

    def done(self, url: str) -> None:
        if self.broker == "redis":
            import redis

            prefix = url.rpartition("prefix=")[2]
            with redis.Redis.from_url(REDIS) as client:
                for pattern in (f"{prefix}:*", f"{{{prefix}:*"):
                    keys = list(client.scan_iter(match=pattern, count=500))
                    for start in range(0, len(keys), 500):
                        client.unlink(*keys[start : start + 500])


def drain(site: Site, n: int, events: bool, reader: bool,
          keep_results: bool) -> tuple[float, float]:
    """Tasks a second one in-process worker drains, with events on or off, and the CPU
    milliseconds this process spent per 1,000 of them (all its threads)."""
    url, results = site.urls()
    hub = Hub(url, results=results if results else (None if keep_results else "none"))

    @hub.task(name="noop")
    async def noop() -> None:
        return None

    for start in range(0, n, 1000):
        noop.delay_many([()] * min(1000, n - start))
    watcher = None
    if reader and events:
        watcher = subprocess.Popen([sys.executable, "-c", READER, url, results or "-"],
                                   stdout=subprocess.PIPE, text=True)
        assert watcher.stdout is not None
        watcher.stdout.readline()  # subscribed
    try:
        worker = WorkerLoop(hub, stop_when_idle=True, events=events)
        started, cpu = time.perf_counter(), time.process_time()
        asyncio.run(worker.run())
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert worker.processed == n, f"drained {worker.processed} of {n}"
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait(10)
        hub.close()
        site.done(url)
    return n / elapsed, cpu * 1000 / (n / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default="sqlite,redis")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reader", action="store_true",
                        help="Also read the events channel from another process.")
    parser.add_argument("--results", action="store_true", help="Keep results (default off).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # a drain's info lines would bury the table
    folder = Path(tempfile.mkdtemp(prefix="hubbub-bench-events-"))
    table = Table(title=f"no-op drain of {args.tasks:,} tasks, one in-process worker "
                        f"(async pool), median of {args.runs}")
    for column in ("broker", "events off /s", "events on /s", "on / off",
                   "CPU ms/1k off", "CPU ms/1k on", "CPU on / off"):
        table.add_column(column, justify="left" if column == "broker" else "right")
    load = os.getloadavg()
    for broker in args.brokers.split(","):
        site = Site(broker.strip(), folder)
        on: list[tuple[float, float]] = []
        off: list[tuple[float, float]] = []
        for _ in range(args.runs):  # in turns: a disturbance hits both sides alike
            on.append(drain(site, args.tasks, True, args.reader, args.results))
            off.append(drain(site, args.tasks, False, args.reader, args.results))
        m_on, m_off = (statistics.median(r for r, _ in on),
                       statistics.median(r for r, _ in off))
        c_on, c_off = (statistics.median(c for _, c in on),
                       statistics.median(c for _, c in off))
        table.add_row(site.broker, f"{m_off:,.0f}", f"{m_on:,.0f}", f"{m_on / m_off:.2f}",
                      f"{c_off:,.0f}", f"{c_on:,.0f}", f"{c_on / c_off:.2f}")
    console.print(table)
    console.print(f"load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the "
                  f"end; {os.cpu_count()} CPUs; reader {'on' if args.reader else 'off'}, "
                  f"results {'kept' if args.results else 'off'}")


if __name__ == "__main__":
    main()
