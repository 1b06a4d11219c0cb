"""How fast producers send: ``delay()`` one by one, hubbub's direct path against its old
path through the bridge loop, and against peers, in the same run (issue #18).

    python bench/producers.py                        # sqlite, redis, amqp; median of 3 runs
    python bench/producers.py --brokers sqlite redis --runs 5 --calls 5000
    python bench/producers.py --brokers sqlite redis --old /tmp/old-tree   # old code too

Rows, each a median of ``--runs`` runs of ``--calls`` no-op sends (after a few that connect
and warm up):

- ``sqlite``, ``redis``: one thread calling ``delay()``. "direct" is the default path (the
  message is written on the caller's thread); "bridge" is the old one, each call handed to
  the hub's bridge loop (the transport's sync publisher switched off for the measurement).
  Peers: Huey (SqliteHuey; RedisHuey) and Dramatiq on Redis, from bench/.venv-peers
  (bench/setup_peers.sh installs it; without it the peer rows say so).
- ``amqp``: one thread, and ``--threads`` threads (default 32) calling ``delay()`` at once,
  with publisher confirms (every call returns once RabbitMQ confirmed its message), from the
  caller's thread over one py-amqp connection all threads share, their confirms pipelined.
  ``--old TREE`` adds the same rows for another checkout (e.g. ``git worktree add /tmp/old
  <commit>``), run in turns with ours. "aio-pika alone" is the driver publishing as many
  persistent messages at once on one loop, with confirms (the old bridge path's ceiling);
  "py-amqp alone" is as many threads each on a connection of its own, waiting for each
  confirm (the ceiling of the pooled path before pipelining). Celery
  (bench/peers/celery_amqp.py) sends one by one without publisher confirms.

With ``--old <tree>`` (a checkout, e.g. from ``git worktree add``), the sqlite and redis
rows also measure that tree's hubbub on the direct path; both trees' direct rows then run in
a fresh process each (``PYTHONPATH`` set to the tree), so they compare alike.

Runs take the variants in turns (the order alternating), so other work on the machine
disturbs them alike; the load average is printed under the table. Every measurement uses a
fresh SQLite file, Redis key prefix or RabbitMQ prefix and removes what it made. Not a
test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from hubbub import Hub

HERE = Path(__file__).resolve().parent
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
AMQP = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
Measure = Callable[[], float | None]


def token() -> str:
    return uuid.uuid4().hex[:10]


def broker_url(broker: str, folder: Path) -> str:
    """A fresh namespace on ``broker``."""
    if broker == "sqlite":
        return f"sqlite:///{folder / f'{token()}.db'}"
    if broker == "redis":
        return f"{REDIS}?prefix=bench-{token()}"
    return f"{AMQP}?prefix=bench-{token()}"


def hubbub_rate(broker: str, folder: Path, calls: int, *, threads: int = 1,
                direct: bool = True) -> float:
    """Sends per second of ``threads`` threads sharing ``calls`` ``delay()`` calls."""
    url = broker_url(broker, folder)
    hub = Hub(url, results="none")

    @hub.task(name="noop")
    def noop() -> None:
        return None

    try:
        for _ in range(min(200, calls // 10) or 1):  # connect, and warm the file or server
            noop.delay()
        if not direct:  # the old path: every send handed to the bridge loop
            client = hub._connector.current()
            assert client is not None
            client.transport.sync_publisher = lambda: None  # type: ignore[method-assign]
        share = calls // threads
        ready = threading.Barrier(threads + 1)

        def send() -> None:
            ready.wait()
            for _ in range(share):
                noop.delay()

        return share * threads / in_threads(send, threads, ready)
    finally:
        cleanup(hub, url)


def cleanup(hub: Hub, url: str) -> None:
    """Remove what one measurement made: its keys on Redis, its queues on RabbitMQ."""
    hub.close()
    prefix = url.rpartition("prefix=")[2]
    if url.startswith("redis"):
        import redis

        with redis.Redis.from_url(REDIS) as client:
            for pattern in (f"{prefix}:*", f"{{{prefix}:*"):
                keys = list(client.scan_iter(match=pattern, count=500))
                if keys:
                    client.unlink(*keys)
    elif url.startswith("amqp"):
        asyncio.run(_delete_amqp(prefix))


async def _delete_amqp(prefix: str) -> None:
    import aio_pika

    from hubbub.transports._amqp_topology import directory_name, exchange_names, queue_names

    async with await aio_pika.connect(AMQP) as conn:
        channel = await conn.channel()
        for name in [*queue_names(prefix, "default"), directory_name(prefix)]:
            await channel.queue_delete(name)
        for name in exchange_names(prefix):
            await channel.exchange_delete(name)


def aio_pika_rate(calls: int, in_flight: int) -> float:
    """The driver alone, the ceiling for hubbub on RabbitMQ: ``in_flight`` coroutines on one
    loop publishing persistent messages with confirms to one durable priority queue."""
    import aio_pika

    async def run() -> float:
        async with await aio_pika.connect(AMQP) as conn:
            channel = await conn.channel(publisher_confirms=True)
            queue = await channel.declare_queue(f"bench-raw-{token()}", durable=True,
                                                arguments={"x-max-priority": 9})
            share = calls // in_flight

            async def send() -> None:
                for _ in range(share):
                    message = aio_pika.Message(b"x" * 300,
                                               delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                    await channel.default_exchange.publish(message, routing_key=queue.name)

            try:
                started = time.perf_counter()
                await asyncio.gather(*(send() for _ in range(in_flight)))
                return share * in_flight / (time.perf_counter() - started)
            finally:
                await queue.delete(if_unused=False, if_empty=False)

    return asyncio.run(run())


def py_amqp_rate(calls: int, threads: int) -> float:
    """The sync driver alone, the ceiling of hubbub's sync path on RabbitMQ: ``threads``
    threads, each on a connection of its own (py-amqp), publishing persistent messages with
    confirms to one durable priority queue."""
    import amqp

    parts = urlsplit(AMQP)
    login = {"host": f"{parts.hostname}:{parts.port or 5672}", "userid": parts.username,
             "password": parts.password}
    name = f"bench-raw-{token()}"
    with amqp.Connection(**login) as admin:
        admin.channel().queue_declare(name, durable=True, auto_delete=False,
                                      arguments={"x-max-priority": 9})
        share = calls // threads
        ready = threading.Barrier(threads + 1)

        def send() -> None:
            with amqp.Connection(**login, confirm_publish=True) as conn:
                channel = conn.channel()
                ready.wait()
                for _ in range(share):
                    channel.basic_publish(amqp.Message(b"x" * 300, delivery_mode=2), "", name,
                                          mandatory=True)

        rate = share * threads / in_threads(send, threads, ready)
        admin.channel().queue_delete(name)
    return rate


def in_threads(send: Callable[[], None], threads: int, ready: threading.Barrier) -> float:
    """Seconds ``threads`` threads take to run ``send``, timed from the moment all of them
    (each waits on ``ready`` first) and the caller pass the barrier."""
    workers = [threading.Thread(target=send) for _ in range(threads)]
    for w in workers:
        w.start()
    ready.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    return time.perf_counter() - started


def peer(script: str, calls: int, env: dict[str, str]) -> float | None:
    """``enqueue`` rate of ``bench/peers/<script>`` in the peers' venv; None without it."""
    if not PEERS_PYTHON.exists():
        return None
    out = subprocess.run([str(PEERS_PYTHON), str(HERE / "peers" / script), "enqueue",
                          str(calls)], env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=600, check=False)
    if out.returncode:
        print(f"  ({script} failed: {out.stderr.strip().splitlines()[-1:]})")
        return None
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    # huey_redis.py says "enqueue_single"; the scripts on bench/peers/_driver.py say "rate"
    value: float = figures.get("enqueue_single", figures.get("rate"))
    return value


def tree_rate(tree: Path, broker: str, folder: Path, calls: int, threads: int = 1) -> float:
    """``hubbub_rate`` on the direct path, in a fresh process importing hubbub from ``tree``."""
    out = subprocess.run([sys.executable, __file__, "--one", broker, "--calls", str(calls),
                          "--threads", str(threads), "--folder", str(folder)],
                         env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
                         text=True, timeout=600, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def variants(broker: str, folder: Path, calls: int, threads: int,
             old: Path | None = None) -> dict[str, Measure]:
    """The measurements of one broker, by row name."""
    rows: dict[str, Measure] = {}
    if broker in ("sqlite", "redis") and old is not None:
        rows[f"{broker} 1 thread: hubbub direct"] = lambda: tree_rate(
            HERE.parent, broker, folder, calls)
        rows[f"{broker} 1 thread: hubbub direct (old tree)"] = lambda: tree_rate(
            old, broker, folder, calls)
    elif broker in ("sqlite", "redis"):
        rows[f"{broker} 1 thread: hubbub direct"] = lambda: hubbub_rate(broker, folder, calls)
        rows[f"{broker} 1 thread: hubbub bridge (old)"] = lambda: hubbub_rate(
            broker, folder, calls, direct=False)
    if broker == "sqlite":
        rows["sqlite 1 thread: Huey"] = lambda: peer(
            "huey_peer.py", calls, {"BENCH_BROKER": "sqlite", "BENCH_PREFIX": f"hbb{token()}"})
    if broker == "redis":
        rows["redis 1 thread: Huey"] = lambda: peer(
            "huey_redis.py", calls, {"BENCH_REDIS": REDIS, "BENCH_PREFIX": f"huey-{token()}"})
        rows["redis 1 thread: Dramatiq"] = lambda: peer(
            "dramatiq_redis.py", calls,
            {"BENCH_REDIS": REDIS, "BENCH_PREFIX": f"dramatiq-{token()}"})
    if broker == "amqp":
        single = max(200, calls // 5)  # one confirm at a time: slow, fewer calls
        rows["amqp 1 thread: hubbub"] = lambda: hubbub_rate(broker, folder, single)
        if old is not None:
            rows["amqp 1 thread: hubbub --old"] = lambda: tree_rate(old, broker, folder, single)
        rows[f"amqp {threads} threads: hubbub"] = lambda: hubbub_rate(
            broker, folder, calls, threads=threads)
        if old is not None:
            rows[f"amqp {threads} threads: hubbub --old"] = lambda: tree_rate(
                old, broker, folder, calls, threads)
        rows[f"amqp {threads} in flight: aio-pika alone"] = lambda: aio_pika_rate(
            calls, threads)
        rows[f"amqp {threads} threads: py-amqp alone"] = lambda: py_amqp_rate(calls, threads)
        rows["amqp 1 thread: Celery, no confirms"] = lambda: peer(
            "celery_amqp.py", single, {"BENCH_AMQP": AMQP, "BENCH_QUEUE": f"celery-{token()}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", nargs="+", default=["sqlite", "redis", "amqp"],
                        choices=["sqlite", "redis", "amqp"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--old", type=Path, metavar="TREE",
                        help="another checkout of hubbub: its direct sqlite/redis rows and its "
                        "amqp rows, in turns with ours")
    parser.add_argument("--one", choices=["sqlite", "redis", "amqp"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.one:  # one measurement, for tree_rate
        print(hubbub_rate(options.one, options.folder, options.calls, threads=options.threads))
        return
    folder = Path(tempfile.mkdtemp(prefix="hubbub-producers-"))
    load_before = os.getloadavg()[0]
    figures: dict[str, list[float]] = {}
    missing: set[str] = set()
    for broker in options.brokers:
        rows = variants(broker, folder, options.calls, options.threads, options.old)
        names = list(rows)
        for run in range(options.runs):
            for name in names if run % 2 == 0 else reversed(names):
                value = rows[name]()
                if value is None:
                    missing.add(name)
                else:
                    figures.setdefault(name, []).append(value)
    report(figures, missing, options, load_before)


def report(figures: dict[str, list[float]], missing: set[str], options: argparse.Namespace,
           load_before: float) -> None:
    """The table: median sends per second, and each broker's first row (hubbub's default
    path) divided by each row: above 1, hubbub is that many times faster."""
    print(f"\nproducers: delay() one by one, median of {options.runs} runs of "
          f"{options.calls} calls (amqp 1 thread: {max(200, options.calls // 5)})")
    print(f"{'row':44} {'sends/s':>10} {'first / row':>12}   runs")
    first: dict[str, float] = {}
    for name, values in figures.items():
        median = statistics.median(values)
        group = name.split(" ")[0] + (" 1" if " 1 thread" in name else " n")
        base = first.setdefault(group, median)
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{name:44} {median:10,.0f} {base / median:11.2f}x   {runs}")
    for name in sorted(missing):
        print(f"{name:44} {'-':>10}   (peers not installed or failed: bench/setup_peers.sh)")
    print(f"load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
          f"({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
