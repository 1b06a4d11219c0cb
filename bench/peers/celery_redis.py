"""Celery on Redis, measured the way bench/throughput.py measures hubbub.

Run with the peers' venv:

    BENCH_REDIS=redis://127.0.0.1:6379/0 BENCH_PREFIX=celery-bench-1: \\
        python bench/peers/celery_redis.py MODE N [--acks-late]

MODE is ``enqueue`` (N ``delay()`` calls one by one) or ``drain`` (queue N no-op tasks, start
``celery worker --pool prefork -c 2`` and time it until the queue is empty and nothing is
unacknowledged, worker start included). Celery as it is normally run: no result backend,
acks on receipt by a pool process unless ``--acks-late``. Every key carries BENCH_PREFIX
(kombu's ``global_keyprefix``); the script deletes them when done. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import redis
from celery import Celery

URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BENCH_PREFIX", "celery-bench:")

app = Celery("celery_redis", broker=URL)
app.conf.update(
    broker_transport_options={"global_keyprefix": PREFIX},
    broker_connection_retry_on_startup=True,
    task_acks_late=os.environ.get("BENCH_ACKS_LATE") == "1",
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop() -> None:
    return None


def pending(client: redis.Redis) -> int:
    # Queued messages, plus those delivered and not yet acknowledged (kombu keeps them in the
    # ``unacked`` hash until the ack: on acceptance by a pool process, or with acks_late after
    # the task ran).
    return int(client.llen(f"{PREFIX}celery")) + int(client.hlen(f"{PREFIX}unacked"))


def cleanup(client: redis.Redis) -> None:
    keys = list(client.scan_iter(match=f"{PREFIX}*", count=500))
    for start in range(0, len(keys), 500):
        client.unlink(*keys[start : start + 500])


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
    client = redis.Redis.from_url(URL)
    try:
        if mode == "enqueue":
            noop.delay()  # connect first
            started = time.perf_counter()
            for _ in range(n):
                noop.delay()
            print(json.dumps({"enqueue_single": n / (time.perf_counter() - started)}))
            return
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                noop.apply_async(producer=producer)
        here = os.path.dirname(os.path.abspath(__file__))
        started = time.perf_counter()
        proc = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "celery"), "-A", "celery_redis",
             "worker", "--pool", "prefork", "-c", "2", "-l", "warning"],
            cwd=here, env={**os.environ, "PYTHONPATH": here},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 600
            while pending(client) and time.monotonic() < deadline:
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        print(json.dumps({"drain": n / elapsed}))
    finally:
        cleanup(client)
        client.close()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if "--acks-late" in sys.argv:
        sys.argv.remove("--acks-late")
        os.environ["BENCH_ACKS_LATE"] = "1"  # for the worker, which imports this module
        app.conf.task_acks_late = True
    main()
