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
time is left out of it and reported apart (``start``). ``latency N --rate R`` starts the
worker, waits until it ran a first task, then sends N ``stamp`` tasks one by one at R a
second; each task pushes the seconds from its send to its start (wall clock, one machine)
onto ``<prefix>:latency``, one Redis round trip like ``incr``; the driver reports their p50
and p99 in milliseconds. Prints one JSON line.

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
import shutil
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
LATENCY_KEY = f"{PREFIX}:latency"
HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "240"))

_made_dirs: list[str] = []
_sync_client: redis.Redis | None = None
_async_client: Any = None


def incr() -> None:
    """The work of a sync ``incr`` task: one INCR, on a connection kept per process."""
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(URL)
    _sync_client.incr(COUNT_KEY)


def stamp(sent: float) -> None:
    """The work of a sync ``stamp`` task: push how long ago it was sent (wall clock)."""
    waited = time.time() - sent
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(URL)
    _sync_client.rpush(LATENCY_KEY, waited)


async def stamp_async(sent: float) -> None:
    """The work of an ``async def`` stamp task."""
    waited = time.time() - sent
    global _async_client
    if _async_client is None:
        import redis.asyncio

        _async_client = redis.asyncio.Redis.from_url(URL)
    await _async_client.rpush(LATENCY_KEY, waited)


async def incr_async() -> None:
    """The work of an ``async def`` incr task: one INCR with redis.asyncio, per process."""
    global _async_client
    if _async_client is None:
        import redis.asyncio  # only async drivers need it

        _async_client = redis.asyncio.Redis.from_url(URL)
    await _async_client.incr(COUNT_KEY)


Args = Callable[[], tuple[Any, ...]]


def no_args() -> tuple[Any, ...]:
    return ()


@dataclass
class System:
    """What one task queue does for the harness.

    Args:
        name: the library, as the report prints it.
        send: ``send(task, pool, n, bulk, args)`` queues n tasks, ``noop``, ``incr`` or
            ``stamp``, in the form ``pool`` runs (``async def`` or not, for a library that
            has both), each with the arguments ``args()`` returns when it is sent.
        workers: ``workers(task, pool)`` is the commands to start, one process each.
        remaining: ``remaining(task)``, queued plus unacknowledged messages (noop drains).
        pools: the pool names ``--pool`` accepts, the first being the default.
        bulk: the bulk API's name, or None when the library has none.
        close: called once when the run ends (before the keys are deleted).
        env: added to the workers' environment.
    """

    name: str
    send: Callable[[str, str, int, bool, Args], None]
    workers: Callable[[str, str], Sequence[Sequence[str]]]
    remaining: Callable[[str], int]
    pools: Sequence[str]
    bulk: str | None = None
    close: Callable[[], None] = lambda: None
    env: dict[str, str] = field(default_factory=dict)


def sqlite_dir() -> str:
    """The folder for an SQLite broker: $BENCH_SQLITE_DIR, else a fresh one, which the
    workers inherit through the environment and the run deletes when it ends."""
    if not os.environ.get("BENCH_SQLITE_DIR"):
        os.environ["BENCH_SQLITE_DIR"] = tempfile.mkdtemp(prefix=PREFIX)
        _made_dirs.append(os.environ["BENCH_SQLITE_DIR"])
    return os.environ["BENCH_SQLITE_DIR"]


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
    system.send("noop", pool, 1, False, no_args)  # connect first
    started = time.perf_counter()
    system.send("noop", pool, n, bulk, no_args)
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
    system.send(task, pool, n, system.bulk is not None, no_args)
    if task == "incr":
        def left() -> int:
            return n - int(client.get(COUNT_KEY) or 0)
    else:
        def left() -> int:
            return system.remaining(task)
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        procs = start(system, task, pool, log)
        try:
            ended, first = watch(system, procs, log, left, n)
        finally:
            stop(procs)
    if first is None:  # all of it ran between two polls
        first = (started, n)
    return {"rate": first[1] / max(ended - first[0], 1e-9),
            "rate_with_start": n / (ended - started),
            "wall": ended - started, "start": first[0] - started}


def start(system: System, task: str, pool: str, log: Any) -> list[subprocess.Popen[bytes]]:
    """Start the workers, each in a session of its own (see ``stop``)."""
    commands = system.workers(task, pool)  # may set os.environ for the workers first
    env = {**os.environ, **system.env,
           "PYTHONPATH": os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))}
    return [subprocess.Popen(list(cmd), cwd=HERE, env=env, stdout=log, stderr=log,
                             start_new_session=True)
            for cmd in commands]


def watch(system: System, procs: Sequence[subprocess.Popen[bytes]], log: Any,
          left: Callable[[], int], n: int) -> tuple[float, tuple[float, int] | None]:
    """Poll ``left()`` until 0; the end time and the first poll that saw progress (its time
    and how many were left then)."""
    first: tuple[float, int] | None = None
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
    return time.perf_counter(), first


def latency(system: System, client: redis.Redis, n: int, pool: str,
            rate: float) -> dict[str, float]:
    def left(want: int) -> Callable[[], int]:
        return lambda: want - int(client.llen(LATENCY_KEY))

    def paced() -> tuple[Any, ...]:
        nonlocal next_at
        next_at += 1 / rate
        time.sleep(max(0.0, next_at - time.perf_counter()))
        return (time.time(),)

    with tempfile.TemporaryFile() as log:
        procs = start(system, "stamp", pool, log)
        try:
            system.send("stamp", pool, 1, False, lambda: (time.time(),))
            watch(system, procs, log, left(1), 1)  # the worker is up and connected
            client.delete(LATENCY_KEY)
            next_at = time.perf_counter()
            system.send("stamp", pool, n, False, paced)
            watch(system, procs, log, left(n), n)
        finally:
            stop(procs)
    waits = sorted(float(w) * 1000 for w in client.lrange(LATENCY_KEY, 0, -1))
    return {"p50": waits[len(waits) // 2], "p99": waits[max(0, int(len(waits) * 0.99) - 1)]}


def main(system: System) -> None:
    parser = argparse.ArgumentParser(description=f"{system.name}: see bench/peers/_driver.py")
    parser.add_argument("mode", choices=["enqueue", "drain", "latency"])
    parser.add_argument("n", type=int)
    parser.add_argument("--task", choices=["noop", "incr"], default="noop")
    parser.add_argument("--pool", choices=list(system.pools), default=system.pools[0])
    parser.add_argument("--bulk", action="store_true", help="enqueue with the bulk API")
    parser.add_argument("--rate", type=float, default=200.0, help="latency: sends a second")
    args = parser.parse_args()
    if args.bulk and system.bulk is None:
        parser.error(f"{system.name} has no bulk enqueue")
    # A SIGTERM from whoever runs this (a timeout) still stops the workers and deletes keys.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    client = redis.Redis.from_url(URL)
    try:
        if args.mode == "enqueue":
            out = enqueue(system, args.n, args.bulk)
        elif args.mode == "latency":
            out = latency(system, client, args.n, args.pool, args.rate)
        else:
            out = drain(system, client, args.n, args.task, args.pool)
    finally:
        try:
            system.close()
        finally:
            delete_keys(client)
            client.close()
            for folder in _made_dirs:
                shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(out))
