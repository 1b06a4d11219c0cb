"""The harness every driver in bench/peers/ shares, hubbub's and each peer's.

A driver is a module that is both the app its worker imports and a command line:

    BENCH_REDIS=redis://127.0.0.1:6379/0 BENCH_PREFIX=hbb1a2b3c4celery1 \\
        python bench/peers/celery_redis.py enqueue 1000
    ... python bench/peers/celery_redis.py drain 2000 --task incr [--pool NAME]

``enqueue N`` times N sends one by one from one thread (``--bulk``: the library's bulk API,
when it has one). ``drain N`` queues N tasks (in bulk when it can; not timed), starts the
worker the way its users run it, and times it until every task ran: for ``--task incr``
(each task makes one Redis INCR on ``<prefix>:count``) until the counter reaches N, for
``--task noop`` until the library's own count of queued and unacknowledged messages is 0.
The drain rate counts from the first task seen done to the last, so a worker's start-up
time is left out of it and reported apart (``start``). Prints one JSON line.

Every key a run makes contains BENCH_PREFIX (lowercase letters, digits and ``-``), and the
run deletes every key that contains it, and only those, when it ends, even on failure.
Workers run in a session of their own and are stopped (SIGTERM, then SIGKILL to that
session) when the run ends, even on failure. Only the standard library and redis-py here:
the same file runs in hubbub's environment and in the peers' venv.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BENCH_PREFIX", "hbb-manual")
COUNT_KEY = f"{PREFIX}:count"
HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "240"))

_sync_client: redis.Redis | None = None
_async_client: Any = None


def incr() -> None:
    """The work of a sync ``incr`` task: one INCR, on a connection kept per process."""
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(URL)
    _sync_client.incr(COUNT_KEY)


async def incr_async() -> None:
    """The work of an ``async def`` incr task: one INCR with redis.asyncio, per process."""
    global _async_client
    if _async_client is None:
        import redis.asyncio  # only async drivers need it

        _async_client = redis.asyncio.Redis.from_url(URL)
    await _async_client.incr(COUNT_KEY)


@dataclass
class System:
    """What one task queue does for the harness.

    Args:
        name: the library, as the report prints it.
        send: ``send(task, pool, n, bulk)`` queues n tasks, ``noop`` or ``incr``, in the
            form ``pool`` runs (``async def`` or not, for a library that has both).
        workers: ``workers(task, pool)`` is the commands to start, one process each.
        remaining: ``remaining(task)``, queued plus unacknowledged messages (noop drains).
        pools: the pool names ``--pool`` accepts, the first being the default.
        bulk: the bulk API's name, or None when the library has none.
        close: called once when the run ends (before the keys are deleted).
        env: added to the workers' environment.
    """

    name: str
    send: Callable[[str, str, int, bool], None]
    workers: Callable[[str, str], Sequence[Sequence[str]]]
    remaining: Callable[[str], int]
    pools: Sequence[str]
    bulk: str | None = None
    close: Callable[[], None] = lambda: None
    env: dict[str, str] = field(default_factory=dict)


def bin_path(name: str) -> str:
    """A console script of the interpreter running this file (the venv's ``celery``...)."""
    return os.path.join(os.path.dirname(sys.executable), name)


def delete_keys(client: redis.Redis) -> None:
    """UNLINK every key containing PREFIX, and only those."""
    keys = list(client.scan_iter(match=f"*{PREFIX}*", count=1000))
    for start in range(0, len(keys), 500):
        client.unlink(*keys[start : start + 500])


def enqueue(system: System, n: int, bulk: bool) -> dict[str, float]:
    pool = system.pools[0]
    system.send("noop", pool, 1, False)  # connect first
    started = time.perf_counter()
    system.send("noop", pool, n, bulk)
    return {"rate": n / (time.perf_counter() - started)}


def stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each worker's session (a warm shutdown), then SIGKILL what is left of it."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the pool's children too; started by us
        proc.wait(10)


def drain(system: System, client: redis.Redis, n: int, task: str,
          pool: str) -> dict[str, float]:
    system.send(task, pool, n, system.bulk is not None)
    if task == "incr":
        def left() -> int:
            return n - int(client.get(COUNT_KEY) or 0)
    else:
        def left() -> int:
            return system.remaining(task)
    commands = system.workers(task, pool)  # may set os.environ for the workers first
    env = {**os.environ, **system.env,
           "PYTHONPATH": os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        procs = [subprocess.Popen(list(cmd), cwd=HERE, env=env, stdout=log, stderr=log,
                                  start_new_session=True)
                 for cmd in commands]
        ended, first = watch(system, procs, log, left, n)
    if first is None:  # all of it ran between two polls
        first = (started, n)
    return {"rate": first[1] / max(ended - first[0], 1e-9),
            "rate_with_start": n / (ended - started),
            "wall": ended - started, "start": first[0] - started}


def watch(system: System, procs: Sequence[subprocess.Popen[bytes]], log: Any,
          left: Callable[[], int], n: int) -> tuple[float, tuple[float, int] | None]:
    """Poll ``left()`` until 0, then stop the workers; the end time and the first poll that
    saw progress (its time and how many were left then)."""
    first: tuple[float, int] | None = None
    try:
        deadline = time.monotonic() + TIMEOUT
        while (remaining := left()) > 0:
            now = time.perf_counter()
            if first is None and remaining < n:
                first = (now, remaining)
            if time.monotonic() > deadline:
                raise SystemExit(f"{system.name}: {remaining} of {n} left after {TIMEOUT}s")
            if any(proc.poll() is not None for proc in procs):
                log.seek(0)
                raise SystemExit(f"{system.name}: a worker exited:\n"
                                 f"{log.read()[-3000:].decode(errors='replace')}")
            time.sleep(0.005)
        ended = time.perf_counter()
    finally:
        stop(procs)
    return ended, first


def main(system: System) -> None:
    parser = argparse.ArgumentParser(description=f"{system.name}: see bench/peers/_driver.py")
    parser.add_argument("mode", choices=["enqueue", "drain"])
    parser.add_argument("n", type=int)
    parser.add_argument("--task", choices=["noop", "incr"], default="noop")
    parser.add_argument("--pool", choices=list(system.pools), default=system.pools[0])
    parser.add_argument("--bulk", action="store_true", help="enqueue with the bulk API")
    args = parser.parse_args()
    if args.bulk and system.bulk is None:
        parser.error(f"{system.name} has no bulk enqueue")
    # A SIGTERM from whoever runs this (a timeout) still stops the workers and deletes keys.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    client = redis.Redis.from_url(URL)
    try:
        if args.mode == "enqueue":
            out = enqueue(system, args.n, args.bulk)
        else:
            out = drain(system, client, args.n, args.task, args.pool)
    finally:
        try:
            system.close()
        finally:
            delete_keys(client)
            client.close()
    print(json.dumps(out))
