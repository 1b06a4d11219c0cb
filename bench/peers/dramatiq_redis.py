"""Dramatiq on Redis, driven by bench/peers/_driver.py (see there for the modes).

Run with the peers' venv (bench/setup_peers.sh):

    BENCH_PREFIX=hbbx1 bench/.venv-peers/bin/python bench/peers/dramatiq_redis.py \\
        drain 2000 --task incr [--pool p1t8]

Dramatiq as it is normally run: its default middleware, no results middleware, acks after
the actor ran; ``--pool p2t8`` (the default) is ``dramatiq -p 2 -t 8`` (its defaults on two
cores), ``p1t8`` one process. Dramatiq has no bulk send. Every key is under the namespace
BENCH_PREFIX. A noop drain ends when ``qsize`` (queued plus delivered and unacked) is 0.
"""

from __future__ import annotations

import _driver
import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=_driver.URL, namespace=_driver.PREFIX)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop", queue_name="default")
def noop() -> None:
    return None


@dramatiq.actor(actor_name="incr", queue_name="default")
def incr() -> None:
    _driver.incr()


@dramatiq.actor(actor_name="stamp", queue_name="default")
def stamp(sent: float) -> None:
    _driver.stamp(sent)


ACTORS = {"noop": noop, "incr": incr, "stamp": stamp}
POOLS = {"p2t8": ["-p", "2", "-t", "8"], "p1t8": ["-p", "1", "-t", "8"]}


def send(task: str, pool: str, n: int, bulk: bool, args: _driver.Args) -> None:
    for _ in range(n):
        ACTORS[task].send(*args())


def remaining(task: str) -> int:
    return int(broker.do_qsize("default"))


def workers(task: str, pool: str) -> list[list[str]]:
    return [[_driver.bin_path("dramatiq"), "dramatiq_redis", *POOLS[pool]]]


if __name__ == "__main__":
    _driver.main(_driver.System(name="Dramatiq", send=send, workers=workers,
                                remaining=remaining, pools=list(POOLS), close=broker.close))
