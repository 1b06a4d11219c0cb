"""Huey's RedisHuey, enqueueing the way bench/producers.py measures hubbub's ``delay()``.

Run with the peers' venv:

    BENCH_REDIS=redis://127.0.0.1:6379/0 BENCH_PREFIX=huey-bench-1 \\
        bench/.venv-peers/bin/python bench/peers/huey_redis.py enqueue N

N calls of a no-op task one by one from one thread (after one call that connects), as Huey
is normally used: its default pickle serializer, results off. Every key is under the name
BENCH_PREFIX; the script deletes them when done. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time

from huey import RedisHuey

URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BENCH_PREFIX", "huey-bench")

huey = RedisHuey(name=PREFIX, url=URL, results=False)


@huey.task()
def noop() -> None:
    return None


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
    if mode != "enqueue":
        raise SystemExit(f"unknown mode {mode!r}: only enqueue")
    try:
        noop()  # connect first
        started = time.perf_counter()
        for _ in range(n):
            noop()
        print(json.dumps({"enqueue_single": n / (time.perf_counter() - started)}))
    finally:
        huey.storage.flush_all()


if __name__ == "__main__":
    main()
