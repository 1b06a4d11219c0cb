"""Huey, on Redis (``RedisHuey``) or on SQLite (``SqliteHuey``, with BENCH_BROKER=sqlite,
the only embedded peer), driven by bench/peers/_driver.py (see there for the modes).

Run with the peers' venv (bench/setup_peers.sh):

    BENCH_PREFIX=hbbx1 bench/.venv-peers/bin/python bench/peers/huey_peer.py drain 2000

The consumer is ``huey_consumer huey_peer.huey -k process -w 2`` (process workers, one per
core). Results off. Huey has no bulk send. A noop drain ends when ``pending_count()`` is 0:
Huey removes a task from its queue when a worker takes it, so up to 2 may still be running
then. SqliteHuey never acknowledges (at-most-once). The Redis keys carry BENCH_PREFIX (Huey
keeps only its letters and digits, so the prefix has only those).
"""

from __future__ import annotations

import os

import _driver
from huey import RedisHuey, SqliteHuey

if os.environ.get("BENCH_BROKER") == "sqlite":
    huey = SqliteHuey(filename=f"{_driver.sqlite_dir()}/huey.db", results=False)
else:
    huey = RedisHuey(name=_driver.PREFIX, url=_driver.URL, results=False)


@huey.task(name="noop")
def noop() -> None:
    return None


@huey.task(name="incr")
def incr() -> None:
    _driver.incr()


@huey.task(name="stamp")
def stamp(sent: float) -> None:
    _driver.stamp(sent)


def send(task: str, pool: str, n: int, bulk: bool, args: _driver.Args) -> None:
    # Through the module the consumer imports: Huey names a task after its module, and run
    # as a script this one is __main__.
    import huey_peer

    queued = {"noop": huey_peer.noop, "incr": huey_peer.incr, "stamp": huey_peer.stamp}[task]
    for _ in range(n):
        queued(*args())


def remaining(task: str) -> int:
    import huey_peer

    return int(huey_peer.huey.pending_count())


def workers(task: str, pool: str) -> list[list[str]]:
    return [[_driver.bin_path("huey_consumer"), "huey_peer.huey", "-k", "process", "-w", "2",
             "-q"]]


if __name__ == "__main__":
    _driver.main(_driver.System(name="Huey", send=send, workers=workers, remaining=remaining,
                                pools=["process2"]))
