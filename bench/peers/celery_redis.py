"""Celery on Redis, driven by bench/peers/_driver.py (see there for the modes).

Run with the peers' venv (bench/setup_peers.sh):

    BENCH_PREFIX=hbb-x-celery-1 bench/.venv-peers/bin/python bench/peers/celery_redis.py \\
        drain 2000 --task incr [--pool prefork-acks-late]

Celery as it is normally run: ``celery worker --pool prefork -c 2`` (its default pool, one
process per core here), no result backend, acks on receipt by a pool process, or after the
task ran with ``--pool prefork-acks-late`` (``task_acks_late=True``). Celery has no bulk
send; the drain queues through one producer. Every key carries the prefix (kombu's
``global_keyprefix``). A noop drain ends when the queue and kombu's ``unacked`` hash are
empty.
"""

from __future__ import annotations

import os

import _driver
from celery import Celery

app = Celery("celery_redis", broker=_driver.URL)
app.conf.update(
    broker_transport_options={"global_keyprefix": f"{_driver.PREFIX}:"},
    broker_connection_retry_on_startup=True,
    task_acks_late=os.environ.get("BENCH_ACKS_LATE") == "1",
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop() -> None:
    return None


@app.task(name="incr")
def incr() -> None:
    _driver.incr()


@app.task(name="stamp")
def stamp(sent: float) -> None:
    _driver.stamp(sent)


TASKS = {"noop": noop, "incr": incr, "stamp": stamp}


def send(task: str, pool: str, n: int, bulk: bool, args: _driver.Args) -> None:
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            TASKS[task].apply_async(args(), producer=producer)


def remaining(task: str) -> int:
    # Queued, plus delivered and not yet acknowledged (kombu keeps those in ``unacked``).
    # kombu's client adds the key prefix itself.
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        return int(client.llen("celery")) + int(client.hlen("unacked"))


def workers(task: str, pool: str) -> list[list[str]]:
    os.environ["BENCH_ACKS_LATE"] = "1" if pool == "prefork-acks-late" else "0"
    return [[_driver.bin_path("celery"), "-A", "celery_redis", "worker", "--pool", "prefork",
             "-c", "2", "-l", "warning", "--without-mingle", "--without-gossip"]]


if __name__ == "__main__":
    _driver.main(_driver.System(
        name="Celery", send=send, workers=workers, remaining=remaining,
        pools=["prefork", "prefork-acks-late"]))
