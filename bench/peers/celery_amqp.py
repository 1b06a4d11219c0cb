"""Celery on RabbitMQ, measured the way bench/extra_brokers.py measures hubbub on RabbitMQ.

Run with the peers' venv (bench/setup_peers.sh installs it):

    BENCH_AMQP=amqp://guest:guest@127.0.0.1:5672// BENCH_QUEUE=celery-bench-1 \\
        bench/.venv-peers/bin/python bench/peers/celery_amqp.py MODE N

MODE is ``enqueue`` (N ``delay()`` calls one by one) or ``drain`` (queue N no-op tasks, start
``celery worker --pool prefork -c 2``, send it SIGTERM once the queue shows nothing ready,
and divide the tasks it ran, N less what is back in the queue after it exits, by the time
from its start to its exit). Celery as it is normally run on RabbitMQ: no result backend,
acks on receipt by a pool process, no publisher confirms; mingle and gossip are off because
a lone benchmark worker has no neighbours to sync with. Everything goes through the queue and
exchange BENCH_QUEUE, deleted when done. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from celery import Celery

URL = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("BENCH_QUEUE", "celery-bench")

app = Celery("celery_amqp", broker=URL)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop() -> None:
    return None


def ready() -> int:
    with app.connection_for_write() as conn:
        _, count, _ = conn.default_channel.queue_declare(QUEUE, passive=True)
        return int(count)


def cleanup() -> None:
    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete(QUEUE)
        conn.default_channel.exchange_delete(QUEUE)  # kombu declares one named after the queue


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)  # warm shutdown
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
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
            [os.path.join(os.path.dirname(sys.executable), "celery"), "-A", "celery_amqp",
             "worker", "--pool", "prefork", "-c", "2", "-Q", QUEUE, "-l", "warning",
             "--without-mingle", "--without-gossip"],
            cwd=here, env={**os.environ, "PYTHONPATH": here},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 600
            while ready() and time.monotonic() < deadline:
                time.sleep(0.02)  # polling the queue, as the hubbub side does
        finally:
            stop(proc)
        elapsed = time.perf_counter() - started
        print(json.dumps({"drain": (n - ready()) / elapsed}))
    finally:
        cleanup()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
