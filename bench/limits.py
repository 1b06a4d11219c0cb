"""What limits cost: a worker's drain of no-op tasks without limits, with a concurrency limit
that never binds, and with a rate that never binds; and a producer's sends with and without
unique keys. Every limit check is one round trip to the result store; a task without limits
makes none.

    python bench/limits.py                      # Redis broker and results on 127.0.0.1:6379
    python bench/limits.py --tasks 5000 --runs 3 --url sqlite:////tmp/limits-bench.db

One in-process worker (async pool, -c 50) drains tasks enqueued before it starts; each
figure is the median of ``--runs`` runs, each on a fresh key prefix (or file). Not a test:
nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubbub import Hub
from hubbub._redis import RedisURL
from hubbub.testing import drain_async
from hubbub.worker.pools import make_pool

KINDS: dict[str, dict[str, Any]] = {
    "no limits": {},
    "concurrency=1000 (never binds)": {"concurrency": 1000},
    "rate_limit=100000/s (never binds)": {"rate_limit": "100000/s"},
}


def fresh(url: str) -> str:
    run = uuid.uuid4().hex[:8]
    if url.startswith("sqlite:"):
        return f"{url.rsplit('.', 1)[0]}-{run}.db"
    return f"{url}{'&' if '?' in url else '?'}prefix=bench{run}"


def remove(url: str) -> None:
    """Delete what a run left: its SQLite files, or its Redis keys."""
    if url.startswith("sqlite:"):
        path = Path(url.removeprefix("sqlite:///"))
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()
        return

    async def unlink() -> None:
        config = RedisURL.parse(url)
        client = config.client(name="hubbub-bench-cleanup")
        try:
            for pattern in (f"{config.prefix}:*", f"{{{config.prefix}:*"):
                keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
                for start in range(0, len(keys), 1000):
                    await client.unlink(*keys[start:start + 1000])
        finally:
            await client.aclose()

    asyncio.run(unlink())


def drain_rate(url: str, tasks: int, options: dict[str, Any]) -> float:
    url = fresh(url)
    hub = Hub(url, results=url)
    try:
        @hub.task(name="bench.noop", **options)
        def noop(i: int) -> None:
            return None

        for start in range(0, tasks, 5000):
            noop.delay_many([(i,) for i in range(start, min(tasks, start + 5000))])
        began = time.perf_counter()
        asyncio.run(drain_async(hub, pool=make_pool("async", 50), timeout=600))
        return tasks / (time.perf_counter() - began)
    finally:
        hub.close()
        remove(url)


def send_rate(url: str, tasks: int, unique: bool) -> float:
    url = fresh(url)
    hub = Hub(url, results=url)
    try:
        @hub.task(name="bench.send", unique=("i",) if unique else None)
        def send(i: int) -> None:
            return None

        began = time.perf_counter()
        for start in range(0, tasks, 1000):
            send.delay_many([(i,) for i in range(start, min(tasks, start + 1000))])
        return tasks / (time.perf_counter() - began)
    finally:
        hub.close()
        remove(url)


def median(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.tasks} no-op tasks, {args.url}, median of {args.runs} runs")
    for name, options in KINDS.items():
        rate = median(args.runs, lambda o=options: drain_rate(args.url, args.tasks, o))
        print(f"  drain, {name:36} {rate:9,.0f} tasks/s")
    for unique in (False, True):
        rate = median(args.runs, lambda u=unique: send_rate(args.url, args.tasks, u))
        print(f"  send, {'unique keys' if unique else 'plain':37} {rate:9,.0f} tasks/s")


if __name__ == "__main__":
    main()
