"""hubbub, driven the way bench/peers/_driver.py drives every peer (see there).

Run with hubbub's own interpreter and the repository on PYTHONPATH:

    PYTHONPATH=$PWD BENCH_PREFIX=hbb-x-1 python bench/peers/hubbub_side.py drain 2000 \\
        --task incr --pool prefork

The worker is ``hubbub worker -A hubbub_side:hub --pool POOL`` as a user starts it:
``prefork`` is ``-c 2`` and runs the sync tasks, ``threads`` (its default ``-c``) the sync
tasks, ``async`` (its default ``-c``) the ``async def`` ones. The broker is Redis under the
key prefix BENCH_PREFIX, or with ``BENCH_BROKER=sqlite`` an SQLite file in a fresh folder.
Results are off (``HUBBUB_RESULTS=none``), as no peer keeps results by default.
``BENCH_HUBBUB_QUERY`` (e.g. ``spin_us=0``) is added to the Redis URL's options, and
``BENCH_HUBBUB_LOG`` sets the worker's log level (default ``error``).
"""

from __future__ import annotations

import os
import sys

import _driver

from hubbub import Hub

if os.environ.get("BENCH_BROKER") == "sqlite":
    BROKER = f"sqlite:///{_driver.sqlite_dir()}/hubbub.db"
else:
    QUERY = os.environ.get("BENCH_HUBBUB_QUERY", "")
    BROKER = f"{_driver.URL}?prefix={_driver.PREFIX}" + (f"&{QUERY}" if QUERY else "")
os.environ["HUBBUB_BROKER"] = BROKER
os.environ["HUBBUB_RESULTS"] = "none"

hub = Hub()


@hub.task(name="noop")
async def noop() -> None:
    return None


@hub.task(name="noop_sync")
def noop_sync() -> None:
    return None


@hub.task(name="incr")
async def incr() -> None:
    await _driver.incr_async()


@hub.task(name="incr_sync")
def incr_sync() -> None:
    _driver.incr()


@hub.task(name="stamp")
async def stamp(sent: float) -> None:
    await _driver.stamp_async(sent)


@hub.task(name="stamp_sync")
def stamp_sync(sent: float) -> None:
    _driver.stamp(sent)


POOLS = {"prefork": ["--pool", "prefork", "-c", "2"], "async": ["--pool", "async"],
         "threads": ["--pool", "threads"]}


def task_name(task: str, pool: str) -> str:
    return task if pool == "async" else f"{task}_sync"


def send(task: str, pool: str, n: int, bulk: bool, args: _driver.Args) -> None:
    target = hub.tasks[task_name(task, pool)]
    if bulk:
        for start in range(0, n, 1000):
            target.delay_many([args() for _ in range(min(1000, n - start))])
    else:
        for _ in range(n):
            target.delay(*args())


def remaining(task: str) -> int:
    async def read() -> int:
        client = await hub.client()
        stats = await client.transport.stats(["default"])
        return sum(s.ready + s.leased + s.delayed for s in stats)

    return hub.bridge.run(read())


def workers(task: str, pool: str) -> list[list[str]]:
    return [[sys.executable, "-m", "hubbub", "worker", "-A", "hubbub_side:hub", *POOLS[pool],
             "-l", os.environ.get("BENCH_HUBBUB_LOG", "error")]]


if __name__ == "__main__":
    _driver.main(_driver.System(
        name="hubbub", send=send, workers=workers, remaining=remaining, pools=list(POOLS),
        bulk="delay_many", close=hub.close))
