"""RabbitMQ and Beanstalkd rows for bench/throughput.py: no-op tasks, hubbub against Celery
on RabbitMQ in the same run.

    python bench/extra_brokers.py --runs 3 --tasks 10000

``rows(runs, n)`` returns (broker, measure, hubbub, peer or None, peer name) rows. Per broker:
``delay()`` one by one (each waits for the broker's confirm: RabbitMQ publisher confirms,
beanstalkd's INSERTED), ``delay_many`` in chunks of 1000, and the drain of n queued no-op
tasks by 2 worker processes ``--pool async`` with results off (``HUBBUB_RESULTS=none``). A
drain runs from starting the workers until they exit after SIGTERM, sent once the queue shows
nothing ready; it counts the tasks run (n less what is back in the queue afterwards), because
RabbitMQ does not report unacked messages over AMQP. Celery (bench/peers/celery_amqp.py, in
bench/.venv-peers from bench/setup_peers.sh) is measured on RabbitMQ the same way; it has no
beanstalkd transport. Servers: $BENCH_AMQP (default the loopback RabbitMQ, guest/guest) and
$BENCH_BEANSTALK (default 127.0.0.1:11300); every measurement uses a fresh prefix, removed
afterwards. Medians of ``runs``. Not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aio_pika
from rich.console import Console
from rich.table import Table

from hubbub import Hub
from hubbub._loader import load_hub
from hubbub.transports._amqp_topology import (
    directory_name,
    exchange_names,
    parse_urls,
    queue_names,
)

HERE = Path(__file__).resolve().parent
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
AMQP = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
BEANSTALK = os.environ.get("BENCH_BEANSTALK", "beanstalk://127.0.0.1:11300/")
APP = textwrap.dedent("""
    from hubbub import Hub
    hub = Hub()   # $HUBBUB_BROKER

    @hub.task(name="noop")
    async def noop() -> None:
        return None
""")
Row = tuple[str, str, float | None, float | None, str]


def median_of(runs: int, measure: Callable[[], float | None]) -> float | None:
    values = [v for v in (measure() for _ in range(runs)) if v is not None]
    return statistics.median(values) if values else None


class Scratch:
    """A folder with the benchmark app, and a fresh prefix on a broker per measurement."""

    def __init__(self, base: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hubbub-bench-"))
        (self.dir / "benchapp.py").write_text(APP)
        if str(self.dir) not in sys.path:
            sys.path.insert(0, str(self.dir))
        self.base = base

    def url(self) -> str:
        return f"{self.base}?prefix=bench{uuid.uuid4().hex[:10]}"

    def hub(self, url: str) -> Hub:
        os.environ["HUBBUB_BROKER"] = url
        os.environ["HUBBUB_RESULTS"] = "none"
        sys.modules.pop("benchapp", None)
        return load_hub("benchapp:hub")


def cleanup(hub: Hub, url: str) -> None:
    """Remove what the measurement left: the queue's messages, and for RabbitMQ its queues."""
    async def purge() -> None:
        client = await hub.client()
        await client.transport.purge("default")

    hub.bridge.run(purge())
    hub.close()
    if url.startswith("amqp"):
        asyncio.run(_delete_amqp(url))


async def _delete_amqp(url: str) -> None:
    [first, *_], options = parse_urls(url)
    prefix = options["prefix"]
    async with await aio_pika.connect(first) as conn:
        channel = await conn.channel()
        for name in [*queue_names(prefix, "default"), directory_name(prefix)]:
            await channel.queue_delete(name)
        for name in exchange_names(prefix):
            await channel.exchange_delete(name)


def ready(hub: Hub) -> int:
    async def read() -> int:
        client = await hub.client()
        [stats] = await client.transport.stats(["default"])
        return stats.ready + stats.delayed

    return hub.bridge.run(read())


def enqueue_single(scratch: Scratch, n: int) -> float:
    url = scratch.url()
    hub = scratch.hub(url)
    task = hub.tasks["noop"]
    task.delay()  # connect first
    started = time.perf_counter()
    for _ in range(n):
        task.delay()
    rate = n / (time.perf_counter() - started)
    cleanup(hub, url)
    return rate


def enqueue_bulk(scratch: Scratch, n: int) -> float:
    url = scratch.url()
    hub = scratch.hub(url)
    task = hub.tasks["noop"]
    task.delay()
    started = time.perf_counter()
    for start in range(0, n, 1000):
        task.delay_many([()] * min(1000, n - start))
    rate = n / (time.perf_counter() - started)
    cleanup(hub, url)
    return rate


def drain(scratch: Scratch, n: int, workers: int = 2) -> float:
    url = scratch.url()
    hub = scratch.hub(url)
    for start in range(0, n, 1000):
        hub.tasks["noop"].delay_many([()] * min(1000, n - start))
    env = {**os.environ, "HUBBUB_BROKER": url, "HUBBUB_RESULTS": "none",
           "PYTHONPATH": str(scratch.dir)}
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "hubbub", "worker", "-A", "benchapp:hub",
                               "--pool", "async", "-l", "error"], env=env, cwd=scratch.dir)
             for _ in range(workers)]
    try:
        deadline = time.monotonic() + 600
        while ready(hub) and time.monotonic() < deadline:
            time.sleep(0.02)  # polling the queue, as the Celery side does
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)  # graceful: unstarted work goes back
        for proc in procs:
            proc.wait(60)
    elapsed = time.perf_counter() - started
    rate = (n - ready(hub)) / elapsed
    cleanup(hub, url)
    return rate


def celery(mode: str, n: int) -> float | None:
    """Celery on RabbitMQ in the peers' venv; None when that venv is missing."""
    if not PEERS_PYTHON.exists():
        return None
    [first, *_], _ = parse_urls(AMQP)
    env = {**os.environ, "BENCH_AMQP": first, "BENCH_QUEUE": f"celery-bench-{uuid.uuid4().hex}"}
    out = subprocess.run([str(PEERS_PYTHON), str(HERE / "peers" / "celery_amqp.py"), mode,
                          str(n)], env=env, capture_output=True, text=True, timeout=900,
                         check=True)
    value: float = next(iter(json.loads(out.stdout.strip().splitlines()[-1]).values()))
    return value


def rows(runs: int, n: int) -> list[Row]:
    """Median figures per broker and measure, with Celery's on RabbitMQ beside hubbub's.

    Args:
        runs: measurements per figure (the median is reported).
        n: tasks per bulk enqueue and per drain; ``delay()`` one by one sends min(n, 5000).

    Returns:
        (broker, measure, hubbub figure, peer figure or None, peer name) rows.
    """
    saved = {k: v for k, v in os.environ.items() if k.startswith("HUBBUB_")}
    try:
        return _rows(runs, n)
    finally:  # the caller's own measurements must not inherit ours
        for key in [k for k in os.environ if k.startswith("HUBBUB_")]:
            del os.environ[key]
        os.environ.update(saved)


def _rows(runs: int, n: int) -> list[Row]:
    single_n = min(n, 5000)
    drain_measure = "drain, 2 workers --pool async, results off (/s)"
    out: list[Row] = []
    for broker, base in (("amqp", AMQP), ("beanstalk", BEANSTALK)):
        scratch = Scratch(base)
        single = median_of(runs, lambda s=scratch: enqueue_single(s, single_n))
        bulk = median_of(runs, lambda s=scratch: enqueue_bulk(s, n))
        rate = median_of(runs, lambda s=scratch: drain(s, n))
        if broker == "amqp":
            peer_single = median_of(runs, lambda: celery("enqueue", single_n))
            peer_drain = median_of(runs, lambda: celery("drain", n))
            out += [(broker, "enqueue, one by one (/s)", single, peer_single,
                     "Celery 5.4 (no publisher confirms)" if peer_single else ""),
                    (broker, "enqueue, bulk (/s)", bulk, None, ""),
                    (broker, drain_measure, rate, peer_drain,
                     "Celery 5.4 --pool prefork -c 2" if peer_drain else "")]
        else:
            out += [(broker, "enqueue, one by one (/s)", single, None, ""),
                    (broker, "enqueue, bulk (/s)", bulk, None, ""),
                    (broker, drain_measure, rate, None, "")]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not PEERS_PYTHON.exists():
        subprocess.run(["bash", str(HERE / "setup_peers.sh")], check=False)
    table = Table(title=f"hubbub on RabbitMQ and Beanstalkd — {args.tasks} no-op tasks, median "
                        f"of {args.runs} runs, {os.cpu_count()} cores, "
                        f"Python {platform.python_version()}")
    for column in ("broker", "measure", "hubbub", "peer", "ratio", "peer is"):
        table.add_column(column, justify="right" if column in {"hubbub", "peer", "ratio"}
                         else "left")
    for broker, what, ours, theirs, peer_name in rows(args.runs, args.tasks):
        ratio = f"{ours / theirs:.1f}x" if ours and theirs else ""
        table.add_row(broker, what, f"{ours:,.1f}" if ours is not None else "-",
                      f"{theirs:,.1f}" if theirs else "-", ratio, peer_name)
    console = Console(width=140)
    console.print(table)
    console.print(f"command: python bench/extra_brokers.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
