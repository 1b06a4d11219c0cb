"""Huey's SqliteHuey, the only embedded (SQLite) peer, measured the same way as hubbub.

Run with the peers' venv: HUEY_DB=path python bench/peers/huey_sqlite.py MODE N.
Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from huey import SqliteHuey

huey = SqliteHuey(filename=os.environ.get("HUEY_DB", "/tmp/huey-bench.db"))


@huey.task()
def noop() -> None:
    return None


def main() -> None:
    # Enqueue through the module the consumer imports, so task names match.
    from huey_sqlite import huey, noop

    mode, n = sys.argv[1], int(sys.argv[2])
    if mode == "enqueue":
        started = time.perf_counter()
        for _ in range(n):
            noop()
        print(json.dumps({"enqueue_single": n / (time.perf_counter() - started)}))
        return
    for _ in range(n):
        noop()
    here = os.path.dirname(os.path.abspath(__file__))
    consumer = os.path.join(os.path.dirname(sys.executable), "huey_consumer")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [consumer, "huey_sqlite.huey", "-k", "process", "-w", "2", "-q"],
        cwd=here, env={**os.environ, "PYTHONPATH": here},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while huey.pending_count() > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(30)
    print(json.dumps({"drain": n / elapsed}))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
