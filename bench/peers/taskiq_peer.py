"""Taskiq on Redis (taskiq-redis's ``ListQueueBroker``), driven by bench/peers/_driver.py.

Run with the peers' venv (bench/setup_peers.sh):

    BENCH_PREFIX=hbbx1 bench/.venv-peers/bin/python bench/peers/taskiq_peer.py drain 2000

The tasks are ``async def``, Taskiq's model; the worker is ``taskiq worker
taskiq_peer:broker`` with its defaults (2 worker processes, up to 100 tasks at a time in
each), no result backend. Sends are awaited one at a time (``await task.kiq()``); Taskiq has
no bulk send. The queue is the Redis list BENCH_PREFIX. A noop drain ends when the list is
empty: a worker pops messages as it takes them (no ack), so up to a worker's prefetch may
still be running then; the incr drain counts what ran.
"""

from __future__ import annotations

import asyncio

import _driver
import redis
from taskiq_redis import ListQueueBroker

broker = ListQueueBroker(_driver.URL, queue_name=_driver.PREFIX)


@broker.task(task_name="noop")
async def noop() -> None:
    return None


@broker.task(task_name="incr")
async def incr() -> None:
    await _driver.incr_async()


@broker.task(task_name="stamp")
async def stamp(sent: float) -> None:
    await _driver.stamp_async(sent)


TASKS = {"noop": noop, "incr": incr, "stamp": stamp}
_client = redis.Redis.from_url(_driver.URL)


def send(task: str, pool: str, n: int, bulk: bool, args: _driver.Args) -> None:
    async def run() -> None:
        await broker.startup()
        try:
            for _ in range(n):
                await TASKS[task].kiq(*args())
        finally:
            await broker.shutdown()

    asyncio.run(run())


def remaining(task: str) -> int:
    return int(_client.llen(_driver.PREFIX))


def workers(task: str, pool: str) -> list[list[str]]:
    return [[_driver.bin_path("taskiq"), "worker", "taskiq_peer:broker", "--workers", "2",
             "--log-level", "WARNING"]]


if __name__ == "__main__":
    _driver.main(_driver.System(name="Taskiq", send=send, workers=workers,
                                remaining=remaining, pools=["workers2"], close=_client.close))
