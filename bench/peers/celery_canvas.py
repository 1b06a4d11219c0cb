"""Celery's canvas on Redis, measured the way bench/workflows.py measures hubbub's.

Run with the peers' venv (bench/setup_peers.sh installs it):

    BENCH_REDIS=redis://127.0.0.1:6379/0 BENCH_PREFIX=celery-wf-1: \\
        bench/.venv-peers/bin/python bench/peers/celery_canvas.py GROUP CHORD CHAIN [POOL]

Starts ``celery worker --pool POOL`` (default ``prefork -c 2``, Celery's usual setup) on
the broker and a Redis result backend (both keyed under BENCH_PREFIX), waits until it
answers a ping, then times: a group of GROUP no-op tasks until every result is read; a chord
of CHORD no-op header tasks until the body's result is read; a chain of CHAIN steps until
the last result is read. Worker start is not timed. Stops the worker, deletes the prefix's
keys. Prints one JSON line of seconds per measurement as it ends; one that runs past
BENCH_TIMEOUT (default 400 s) is printed as null with the limit, and the next one runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import redis
from celery import Celery, chain, chord, group
from celery.exceptions import TimeoutError as CeleryTimeout

URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BENCH_PREFIX", "celery-wf:")

app = Celery("celery_canvas", broker=URL, backend=URL)
app.conf.update(
    broker_transport_options={"global_keyprefix": PREFIX},
    result_backend_transport_options={"global_keyprefix": PREFIX},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=600,
)


@app.task(name="noop")
def noop(x: int) -> int:
    return x


@app.task(name="total")
def total(values: list[int]) -> int:
    return len(values)


@app.task(name="inc")
def inc(x: int) -> int:
    return x + 1


def cleanup(client: redis.Redis) -> None:
    keys = list(client.scan_iter(match=f"{PREFIX}*", count=500))
    for start in range(0, len(keys), 500):
        client.unlink(*keys[start : start + 500])


def main() -> None:
    n_group, n_chord, n_chain = (int(a) for a in sys.argv[1:4])
    pool = sys.argv[4].split() if len(sys.argv) > 4 else ["--pool", "prefork", "-c", "2"]
    client = redis.Redis.from_url(URL)
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_canvas", "worker", *pool,
         "--loglevel", "error", "--without-mingle", "--without-gossip"],
        cwd=here, env={**os.environ, "PYTHONPATH": here}, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if time.monotonic() > deadline:
                raise SystemExit("celery worker did not answer a ping within 60s")
        noop.delay(0).get(timeout=30)  # warm: connections open on both sides
        limit = float(os.environ.get("BENCH_TIMEOUT", "400"))

        def timed(name: str, run: Any) -> None:
            # One JSON line per measurement as it ends: a timeout is reported, not fatal.
            started = time.perf_counter()
            try:
                run()
                print(json.dumps({name: time.perf_counter() - started}), flush=True)
            except CeleryTimeout:
                print(json.dumps({name: None, "timed_out": limit}), flush=True)

        timed("group", lambda: group(noop.s(i) for i in range(n_group)).apply_async().get(
            timeout=limit))
        timed("chord", lambda: chord((noop.s(i) for i in range(n_chord)), total.s())().get(
            timeout=limit))
        timed("chain", lambda: chain(noop.s(0), *(inc.s() for _ in range(n_chain - 1))
                                     ).apply_async().get(timeout=limit))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and its pool, started by us
            proc.wait(10)
        cleanup(client)


if __name__ == "__main__":
    main()
