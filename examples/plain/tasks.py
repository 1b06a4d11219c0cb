"""A plain hubbub app: tasks, a per-process resource, and a wrapper around every task.

Run a worker for it (from this folder)::

    hubbub worker -A tasks:hub --pool prefork -c 2

The broker is ``$HUBBUB_BROKER``, else ``hubbub.db`` beside this file (nothing to install).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from hubbub import Hub, Retry, TaskContext, current_task, get_task_logger

hub = Hub()
log = get_task_logger(__name__)
STATS = Path(os.environ.get("PLAIN_STATS", Path(__file__).with_name("stats.db")))

# One database connection per process that runs tasks (each prefork child has its own):
# opened by on_process_start, closed by on_process_stop.
db: sqlite3.Connection | None = None


@hub.on_process_start
def open_stats() -> None:
    global db
    # check_same_thread=False: on the threads and async pools, tasks run in other threads
    # of this process than the one that ran this hook.
    db = sqlite3.connect(STATS, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS runs (task TEXT, id TEXT, pid INTEGER, ms REAL)")


@hub.on_process_stop
def close_stats() -> None:
    if db is not None:
        db.close()


@hub.around_task
@contextlib.contextmanager
def timed(ctx: TaskContext) -> Iterator[None]:
    """Record how long every task took, in the process that ran it."""
    started = time.perf_counter()
    try:
        yield
    finally:
        if db is not None:
            db.execute("INSERT INTO runs VALUES (?, ?, ?, ?)",
                       (ctx.task, ctx.id, os.getpid(), (time.perf_counter() - started) * 1000))


@hub.task
def add(x: int, y: int) -> int:
    return x + y


@hub.task
def word_count(text: str) -> int:
    count = len(text.split())
    log.info("%d words", count)
    return count


@hub.task(retries=3, retry_backoff=0.1)
def shaky(fail_times: int) -> str:
    """Fails ``fail_times`` times, then succeeds: retries with backoff, done by the worker."""
    attempt = current_task().retries
    if attempt < fail_times:
        raise Retry(countdown=0.1)
    return f"succeeded on attempt {attempt + 1}"
