"""Dramatiq on Redis, measured the way bench/throughput.py measures hubbub.

Run with the peers' venv:

    BENCH_REDIS=redis://127.0.0.1:6379/0 BENCH_PREFIX=dramatiq-bench-1 \\
        python bench/peers/dramatiq_redis.py MODE N [PROCESSES THREADS]

MODE is ``enqueue`` (N ``send()`` calls one by one) or ``drain`` (queue N no-op messages,
start ``dramatiq dramatiq_redis -p PROCESSES -t THREADS`` (default 1 and 8) and time it until
the queue holds nothing, acknowledged or not, worker start included). Dramatiq as it is
normally run: its default middleware, no results middleware, acks after the actor ran. Every
key is under the namespace BENCH_PREFIX; the script deletes them when done. Prints one JSON
line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BENCH_PREFIX", "dramatiq-bench")

broker = RedisBroker(url=URL, namespace=PREFIX)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop", queue_name="default")
def noop() -> None:
    return None


def cleanup(client: redis.Redis) -> None:
    keys = list(client.scan_iter(match=f"{PREFIX}:*", count=500))
    for start in range(0, len(keys), 500):
        client.unlink(*keys[start : start + 500])


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
    processes, threads = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else ("1", "8")
    client = redis.Redis.from_url(URL)
    try:
        if mode == "enqueue":
            noop.send()  # connect first
            started = time.perf_counter()
            for _ in range(n):
                noop.send()
            print(json.dumps({"enqueue_single": n / (time.perf_counter() - started)}))
            return
        for _ in range(n):
            noop.send()
        here = os.path.dirname(os.path.abspath(__file__))
        started = time.perf_counter()
        proc = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "dramatiq"), "dramatiq_redis",
             "-p", processes, "-t", threads],
            cwd=here, env={**os.environ, "PYTHONPATH": here},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 600
            # qsize counts queued messages and delivered ones not yet acked (Dramatiq acks
            # after the actor returns), so 0 means every message ran.
            while broker.do_qsize("default") and time.monotonic() < deadline:
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        print(json.dumps({"drain": n / elapsed}))
    finally:
        broker.close()
        cleanup(client)
        client.close()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
