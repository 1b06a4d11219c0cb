"""What metrics and tracing cost a worker: the no-op drain with each on against off.

    python bench/metrics_cost.py                         # SQLite, 20,000 tasks, 3 runs
    python bench/metrics_cost.py --tasks 50000 --runs 5 --broker redis

Each measurement fills a fresh queue with no-op ``async def`` tasks and drains it with one
in-process worker (``WorkerLoop(stop_when_idle=True)``, the async pool: the fastest drain,
so the one where a per-task cost shows most). Four variants run in turns (off, metrics,
tracing, both; then again), so that other work on the machine disturbs each alike:

- **metrics**: ``WorkerLoop(metrics=WorkerMetrics(0))``, the server of ``--metrics-port``
  on a free loopback port (nobody scrapes it: the cost is the counting);
- **tracing**: ``hubbub.tracing.instrument(hub)`` with an SDK ``TracerProvider`` whose
  spans go to a ``BatchSpanProcessor`` with an exporter that drops them: the send spans
  (while filling) and the run spans (while draining) are made and ended as in production,
  without an exporter's I/O.

Prints, per variant, the median drain rate and its ratio to off, the median CPU time per
1,000 tasks of the drain, and the median fill rate (where the send spans are). Results are
off. Not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hubbub import Hub, WorkerLoop
from hubbub.metrics import WorkerMetrics
from hubbub.tracing import instrument

console = Console()
REDIS = "redis://127.0.0.1:6379/0"
VARIANTS = ("off", "metrics", "tracing", "both")


def provider() -> Any:
    """An SDK tracer provider that makes every span and exports none."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    made = TracerProvider()
    made.add_span_processor(BatchSpanProcessor(Dropped()))
    return made


def measure(url: str, n: int, variant: str) -> tuple[float, float, float]:
    """(drain tasks/s, drain CPU ms per 1,000 tasks, fill tasks/s) for one variant."""
    hub = Hub(url, results="none")
    tracer = None
    if variant in ("tracing", "both"):
        tracer = provider()
        instrument(hub, tracer_provider=tracer)

    @hub.task(name="noop")
    async def noop() -> None:
        return None

    try:
        filled = time.perf_counter()
        for start in range(0, n, 1000):
            noop.delay_many([()] * min(1000, n - start))
        fill = n / (time.perf_counter() - filled)
        metrics = WorkerMetrics(0) if variant in ("metrics", "both") else None
        worker = WorkerLoop(hub, stop_when_idle=True, metrics=metrics)
        started, cpu = time.perf_counter(), time.process_time()
        asyncio.run(worker.run())
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert worker.processed == n, f"drained {worker.processed} of {n}"
    finally:
        hub.close()
        if tracer is not None:
            tracer.shutdown()
    return n / elapsed, cpu * 1000 / (n / 1000), fill


def cleanup(url: str) -> None:
    if not url.startswith("redis"):
        return
    import redis

    prefix = url.rpartition("prefix=")[2]
    with redis.Redis.from_url(REDIS) as client:
        for pattern in (f"{prefix}:*", f"{{{prefix}:*"):
            keys = list(client.scan_iter(match=pattern, count=500))
            for start in range(0, len(keys), 500):
                client.unlink(*keys[start : start + 500])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # a drain's info lines would bury the table
    folder = Path(tempfile.mkdtemp(prefix="hubbub-bench-metrics-"))
    token = uuid.uuid4().hex[:8]
    runs: dict[str, list[tuple[float, float, float]]] = {v: [] for v in VARIANTS}
    load = os.getloadavg()
    count = 0
    for _ in range(args.runs):
        for variant in VARIANTS:  # in turns: a disturbance hits every variant alike
            count += 1
            url = (f"sqlite:///{folder / f'b{count}.db'}" if args.broker == "sqlite"
                   else f"{REDIS}?prefix=bench-metrics-{token}-{count}")
            try:
                runs[variant].append(measure(url, args.tasks, variant))
            finally:
                cleanup(url)
    table = Table(title=f"no-op drain of {args.tasks:,} tasks on {args.broker}, one in-process "
                        f"worker (async pool), median of {args.runs}")
    for column in ("variant", "drain /s", "÷ off", "CPU ms/1k", "÷ off", "fill /s", "÷ off"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    medians = {v: tuple(statistics.median(r[i] for r in runs[v]) for i in range(3))
               for v in VARIANTS}
    base = medians["off"]
    for variant in VARIANTS:
        rate, cpu, fill = medians[variant]
        table.add_row(variant, f"{rate:,.0f}", f"{rate / base[0]:.2f}", f"{cpu:,.0f}",
                      f"{cpu / base[1]:.2f}", f"{fill:,.0f}", f"{fill / base[2]:.2f}")
    console.print(table)
    console.print(f"load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the "
                  f"end; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
