"""Crawl N pages from a local HTTP server on the hybrid pool (async tasks) and on the gevent
pool (blocking tasks), and report pages per second for each.

    python examples/crawler/run.py                      # 200,000 URLs per pool
    python examples/crawler/run.py --urls 20000 --pools hybrid
    python examples/crawler/run.py --urls 2000 --json   # one JSON line per pool

It starts the page server (``server.py``) on a free loopback port, makes an embedded SQLite
broker in a temporary folder, and for each pool: queues one task per URL with ``delay_many``
(in batches), starts ``hubbub worker`` on that pool, waits until the server has served every
page (or the queue is empty), stops the worker with SIGTERM, and asks the server how many
pages were fetched, which were missed and which were fetched more than once. Pages per
second are counted by the server, from the first page served to the last.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
POLL_EVERY = 0.2  # seconds between asking the server how many pages it served
QUEUE_CHECK_EVERY = 2.0  # seconds between queue counts (a count scans the SQLite table)


@dataclass(frozen=True)
class Crawl:
    """What one pool did."""

    pool: str
    options: str
    urls: int
    enqueue_seconds: float
    drain_seconds: float  # from starting the worker to the last page (includes its start)
    pages_per_second: float  # served pages over the server's first-to-last-hit time
    served: int
    missing: int
    duplicated: int
    dead: int


@contextmanager
def page_server(timeout: float = 20.0) -> Iterator[int]:
    """Start server.py; yield its port; stop it (closing its stdin) even on failure."""
    proc = subprocess.Popen([sys.executable, str(HERE / "server.py")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise RuntimeError(f"the page server printed no port within {timeout}s")
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError(f"the page server failed to start (said {line!r})")
        yield int(line)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the server exits when its stdin closes
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_stats(port: int, run: str, n: int = 0) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/_stats/{run}?n={n}"
    with urllib.request.urlopen(url, timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def pool_options(pool: str, options: argparse.Namespace) -> list[str]:
    if pool == "hybrid":
        return ["--pool", "hybrid", "-c", str(options.processes),
                "--coroutines", str(options.coroutines)]
    return ["--pool", "gevent", "-c", str(options.greenlets)]


def crawl(pool: str, port: int, options: argparse.Namespace, logs: Path) -> Crawl:
    import crawlapp  # after run() pointed $HUBBUB_BROKER at the scratch broker

    task = crawlapp.fetch_page if pool == "hybrid" else crawlapp.fetch_page_sync
    queue = crawlapp.ASYNC_QUEUE if pool == "hybrid" else crawlapp.SYNC_QUEUE
    n = options.urls
    urls = [f"http://127.0.0.1:{port}/{pool}/{i}" for i in range(n)]

    started = time.perf_counter()
    for first in range(0, n, options.batch):
        task.delay_many((url,) for url in urls[first:first + options.batch])
    enqueue = time.perf_counter() - started

    command = [sys.executable, "-m", "hubbub", "worker", "-A", "crawlapp:hub", "-Q", queue,
               "--loglevel", "warning", *pool_options(pool, options)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    with (logs / f"worker-{pool}.log").open("wb") as log:
        started = time.perf_counter()
        worker = subprocess.Popen(command, cwd=HERE, env=env, stdout=log, stderr=log)
        try:
            wait_until_done(worker, port, pool, queue, n, started + options.timeout)
            drain = time.perf_counter() - started
            stop(worker)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    stats = server_stats(port, pool, n)
    span = (stats["last"] or 0.0) - (stats["first"] or 0.0)
    return Crawl(pool=pool, options=" ".join(pool_options(pool, options)), urls=n,
                 enqueue_seconds=round(enqueue, 3), drain_seconds=round(drain, 3),
                 pages_per_second=round(stats["served"] / span, 1) if span > 0 else 0.0,
                 served=stats["served"], missing=stats["missing"],
                 duplicated=stats["duplicated"], dead=dead_letters(queue))


def queue_counts(queue: str) -> tuple[int, int]:
    """(messages still to run or running, dead letters) of ``queue``."""
    import crawlapp

    async def count() -> tuple[int, int]:
        client = await crawlapp.hub.client()
        [stats] = await client.transport.stats([queue])
        return stats.ready + stats.delayed + stats.leased, stats.dead

    return crawlapp.hub.bridge.run(count())


def dead_letters(queue: str) -> int:
    return queue_counts(queue)[1]


def wait_until_done(worker: subprocess.Popen[bytes], port: int, run: str, queue: str, n: int,
                    deadline: float) -> None:
    """Until the server served ``n`` pages of ``run`` or the queue holds nothing to run."""
    next_queue_check = time.perf_counter() + QUEUE_CHECK_EVERY
    while True:
        if server_stats(port, run)["served"] >= n:
            return
        now = time.perf_counter()
        if now >= next_queue_check:
            if queue_counts(queue)[0] == 0:
                return
            next_queue_check = now + QUEUE_CHECK_EVERY
        if worker.poll() is not None:
            raise RuntimeError(f"the {run} worker exited with status {worker.returncode}")
        if now > deadline:
            raise TimeoutError(f"the {run} crawl did not finish in time")
        time.sleep(POLL_EVERY)


def stop(worker: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def run(options: argparse.Namespace) -> list[Crawl]:
    with tempfile.TemporaryDirectory(prefix="hubbub-crawl-") as scratch:
        os.environ["HUBBUB_BROKER"] = options.broker or f"sqlite:///{scratch}/crawl.db"
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        logs = Path(options.logs or scratch)
        crawls = []
        with page_server() as port:
            try:
                for pool in options.pools.split(","):
                    crawls.append(crawl(pool, port, options, logs))
            finally:
                import crawlapp

                crawlapp.hub.close()
        return crawls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=200_000, help="pages per pool")
    parser.add_argument("--pools", default="hybrid,gevent", help="hybrid, gevent or both")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="hybrid: child processes (default: the CPU count)")
    parser.add_argument("--coroutines", type=int, default=500, help="hybrid: tasks per child")
    parser.add_argument("--greenlets", type=int, default=500, help="gevent: greenlets")
    parser.add_argument("--batch", type=int, default=5_000, help="URLs per delay_many call")
    parser.add_argument("--broker", help="broker URL (default: an SQLite file in a temp dir)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per pool")
    parser.add_argument("--logs", help="folder for the workers' logs (default: the temp dir)")
    parser.add_argument("--json", action="store_true", help="one JSON object per pool")
    options = parser.parse_args()
    if not set(options.pools.split(",")) <= {"hybrid", "gevent"}:
        parser.error("--pools takes hybrid, gevent or both")
    for result in run(options):
        if options.json:
            print(json.dumps(asdict(result)), flush=True)
        else:
            print(f"{result.pool:>7}: {result.urls:,} pages in {result.drain_seconds:.1f} s "
                  f"({result.pages_per_second:,.0f} pages/s; queued in "
                  f"{result.enqueue_seconds:.1f} s) with {result.options}; served "
                  f"{result.served:,}, missed {result.missing}, twice {result.duplicated}, "
                  f"dead-lettered {result.dead}", flush=True)


if __name__ == "__main__":
    main()
