"""``hubbub demo``."""

from __future__ import annotations

import sys

import click

from hubbub._demo import run_demo
from hubbub.cli._common import console, friendly
from hubbub.worker.pools import POOLS


@click.command()
@click.option("-n", "--tasks", "count", type=click.IntRange(min=10), default=2000,
              show_default=True, help="How many tasks to send.")
@click.option("--pool", type=click.Choice(sorted(POOLS)), default="async", show_default=True,
              help="The worker's pool (see hubbub worker --help).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None,
              help="The worker's concurrency (default: the pool's, as for hubbub worker).")
@click.option("--db", default=None,
              help="SQLite file to use (default: a fresh temporary file, removed afterwards).")
@friendly
def demo(count: int, pool: str, concurrency: int | None, db: str | None) -> None:
    """Start a worker on the embedded SQLite broker, send a mix of tasks, report."""
    sys.exit(run_demo(console, count=count, pool=pool, concurrency=concurrency, db=db))
