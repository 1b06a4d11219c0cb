"""RQ on Redis, driven by bench/peers/_driver.py (see there for the modes).

Run with the peers' venv (bench/setup_peers.sh):

    BENCH_PREFIX=hbbx1 bench/.venv-peers/bin/python bench/peers/rq_redis.py drain 2000

Two ``rq worker`` processes (one per core; RQ's default worker forks a work horse per job),
``result_ttl=0`` (no results). ``--bulk`` is ``Queue.enqueue_many`` (one pipeline per 1,000).
The queue is named BENCH_PREFIX and every job id starts with it. A noop drain ends when the
queue and its started-job registry are empty.
"""

from __future__ import annotations

import itertools

import _driver
import redis
from rq import Queue

_client = redis.Redis.from_url(_driver.URL)
queue = Queue(_driver.PREFIX, connection=_client)
_ids = itertools.count()


def noop() -> None:
    return None


def incr() -> None:
    _driver.incr()


def stamp(sent: float) -> None:
    _driver.stamp(sent)


# By name: run as a script, this module is __main__, which RQ refuses to enqueue from.
TASKS = {"noop": "rq_redis.noop", "incr": "rq_redis.incr", "stamp": "rq_redis.stamp"}


def send(task: str, pool: str, n: int, bulk: bool, args: _driver.Args) -> None:
    func = TASKS[task]
    if not bulk:
        for _ in range(n):
            queue.enqueue(func, *args(), job_id=f"{_driver.PREFIX}-{next(_ids)}",
                          result_ttl=0)
        return
    for start in range(0, n, 1000):
        queue.enqueue_many([Queue.prepare_data(func, args(), result_ttl=0,
                                               job_id=f"{_driver.PREFIX}-{next(_ids)}")
                            for _ in range(min(1000, n - start))])


def remaining(task: str) -> int:
    return len(queue) + queue.started_job_registry.count


def workers(task: str, pool: str) -> list[list[str]]:
    return [[_driver.bin_path("rq"), "worker", "-u", _driver.URL, "-q", _driver.PREFIX]] * 2


def close() -> None:
    # RQ also lists queues and workers in shared sets; take ours out of them.
    for key in (b"rq:queues", b"rq:workers"):
        members = [m for m in _client.smembers(key) if _driver.PREFIX.encode() in m]
        if members:
            _client.srem(key, *members)
    _client.close()


if __name__ == "__main__":
    _driver.main(_driver.System(name="RQ", send=send, workers=workers, remaining=remaining,
                                pools=["worker2"], bulk="enqueue_many", close=close))
