"""arq on Redis, driven by bench/peers/_driver.py (see there for the modes).

Run with the peers' venv (bench/setup_peers.sh):

    BENCH_PREFIX=hbbx1 bench/.venv-peers/bin/python bench/peers/arq_redis.py drain 2000

The tasks are ``async def``, arq's only kind; the worker is ``arq arq_redis.WorkerSettings``
with arq's defaults (one process, ``max_jobs=10``, polling the queue every 0.5 s) and
``keep_result=0`` (no results, as on the other side). Sends are awaited one at a time
(``await pool.enqueue_job(...)``); arq has no bulk send. The queue is the sorted set
BENCH_PREFIX and every job id starts with it. arq removes a job from its queue when the job
finished, so a noop drain ends when the set is empty.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import _driver
import redis
from arq import create_pool
from arq.connections import RedisSettings

SETTINGS = RedisSettings.from_dsn(_driver.URL)
_ids = itertools.count()


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def incr(ctx: dict[str, Any]) -> None:
    await _driver.incr_async()


async def stamp(ctx: dict[str, Any], sent: float) -> None:
    await _driver.stamp_async(sent)


class WorkerSettings:
    functions = [noop, incr, stamp]  # noqa: RUF012 (arq reads these class attributes)
    redis_settings = SETTINGS
    queue_name = _driver.PREFIX
    keep_result = 0


_client = redis.Redis.from_url(_driver.URL)


def send(task: str, pool: str, n: int, bulk: bool, args: _driver.Args) -> None:
    async def run() -> None:
        arq_pool = await create_pool(SETTINGS, default_queue_name=_driver.PREFIX)
        try:
            for _ in range(n):
                await arq_pool.enqueue_job(task, *args(),
                                           _job_id=f"{_driver.PREFIX}-{next(_ids)}")
        finally:
            await arq_pool.aclose()

    asyncio.run(run())


def remaining(task: str) -> int:
    return int(_client.zcard(_driver.PREFIX))


def workers(task: str, pool: str) -> list[list[str]]:
    return [[_driver.bin_path("arq"), "arq_redis.WorkerSettings"]]


if __name__ == "__main__":
    _driver.main(_driver.System(name="arq", send=send, workers=workers, remaining=remaining,
                                pools=["default"], close=_client.close))
