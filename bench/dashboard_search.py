"""How fast the dashboard's task search answers with a big history: seed N task records
(default 100,000) into a result store, then time each kind of search the Tasks page makes.

    python bench/dashboard_search.py                       # sqlite and redis, 100,000 tasks
    python bench/dashboard_search.py --stores sqlite --tasks 20000 --runs 9

Records go in through ``ResultBackend.store`` in batches, as workers write them (each write
also writes the history row); 20 task names, 8 workers, about 5% failures, spread over the
last six days. Each search is run ``--runs`` times; the table shows the median and the
slowest, in milliseconds. The issue's target: under 200 ms at 100,000 tasks. Not a test:
nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table
from throughput import delete_prefix

from hubbub.results import ResultBackend, ResultRecord, State, open_results
from hubbub.results.base import HistoryQuery

BATCH = 1000  # records per store call while seeding


async def seed(store: ResultBackend, n: int, rng: random.Random) -> str:
    """Write ``n`` finished task records; returns one id to look up."""
    now = time.time()
    some_id = ""
    for start in range(0, n, BATCH):
        batch = []
        for i in range(start, min(n, start + BATCH)):
            created = now - rng.uniform(0, 6 * 86400)
            state = State.FAILURE if rng.random() < 0.05 else State.SUCCESS
            record = ResultRecord(uuid.uuid4().hex, state, task=f"shop.task{i % 20}",
                                  value=i, worker=f"worker-{i % 8}", created_at=created,
                                  started_at=created + 0.01, finished_at=created + 0.05)
            batch.append(record)
        some_id = batch[len(batch) // 2].id
        await store.store(batch, ttl=7 * 86400)
    return some_id


async def bench_store(url: str, n: int, runs: int) -> list[tuple[str, float, float, int]]:
    store = open_results(url)
    await store.connect()
    try:
        started = time.perf_counter()
        some_id = await seed(store, n, random.Random(7))
        print(f"  seeded {n:,} records in {time.perf_counter() - started:.1f}s")
        now = time.time()
        searches = {
            "newest 100 (no filter)": HistoryQuery(limit=100),
            "by id": HistoryQuery(id=some_id),
            "by task name": HistoryQuery(task="shop.task7", limit=100),
            "by state FAILURE": HistoryQuery(state=State.FAILURE, limit=100),
            "by worker": HistoryQuery(worker="worker-3", limit=100),
            "task + state": HistoryQuery(task="shop.task7", state=State.FAILURE, limit=100),
            "task + last hour": HistoryQuery(task="shop.task7", since=now - 3600, limit=100),
            "overview (newest 5,000)": HistoryQuery(since=now - 3600, limit=5000),
        }
        out = []
        for name, query in searches.items():
            times = []
            found = 0
            for _ in range(runs):
                t0 = time.perf_counter()
                found = len(await store.search_history(query))
                times.append((time.perf_counter() - t0) * 1000)
            out.append((name, statistics.median(times), max(times), found))
        return out
    finally:
        await store.close()


async def write_cost(urls: list[str], n: int) -> tuple[float, float]:
    """Median records stored per second with history rows off and on, in turns (off, on,
    off, on, ...; one fresh store URL per run), so that a change of load hits both."""
    rates: dict[bool, list[float]] = {False: [], True: []}
    for i, url in enumerate(urls):
        history = i % 2 == 1
        store = open_results(url)
        if not history:
            store.history_ttl = None
        await store.connect()
        try:
            started = time.perf_counter()
            await seed(store, n, random.Random(i))
            rates[history].append(n / (time.perf_counter() - started))
        finally:
            await store.close()
    return statistics.median(rates[False]), statistics.median(rates[True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", nargs="+", default=["sqlite", "redis"],
                        choices=["sqlite", "redis", "memory"])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--cost-tasks", type=int, default=10_000,
                        help="records per run of the write-cost comparison")
    parser.add_argument("--turns", type=int, default=3,
                        help="runs with history rows off and on each, taken in turns")
    parser.add_argument("--no-search", action="store_true",
                        help="only the write-cost comparison")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.stores:
            prefix = f"bench-{uuid.uuid4().hex[:8]}"
            url = {"sqlite": f"sqlite:///{Path(folder) / 'results.db'}",
                   "redis": f"{args.redis}?prefix={prefix}",
                   "memory": f"memory://{prefix}"}[kind]
            if not args.no_search:
                console.print(f"[bold]{kind}[/bold]: {args.tasks:,} tasks, {args.runs} runs")
                try:
                    rows = asyncio.run(bench_store(url, args.tasks, args.runs))
                finally:
                    if kind == "redis":
                        delete_prefix(args.redis, prefix)
                table = Table(title=f"task search on {kind}, {args.tasks:,} tasks")
                for column in ("search", "median ms", "slowest ms", "rows"):
                    table.add_column(column, justify="left" if column == "search" else "right")
                for name, median, worst, found in rows:
                    table.add_row(name, f"{median:.1f}", f"{worst:.1f}", str(found))
                console.print(table)
            turns = [url.replace("results.db", f"cost{i}.db") if kind == "sqlite" else url
                     for i in range(2 * args.turns)]
            off, on = asyncio.run(write_cost(turns, args.cost_tasks))
            if kind == "redis":
                delete_prefix(args.redis, prefix)
            console.print(f"  store() in batches of {BATCH}: {off:,.0f} records/s without "
                          f"history rows, {on:,.0f}/s with them ({on / off:.0%})")


if __name__ == "__main__":
    main()
