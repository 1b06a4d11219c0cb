"""How fast async producers send on Redis: ``await task.delay_async()`` from an event loop
that is not the hub's bridge loop, this tree against another (issue #18).

    python bench/async_producers.py --old /tmp/old-tree                 # median of 3 runs
    python bench/async_producers.py --old /tmp/old-tree --runs 5 --calls 3000 --fresh 100
    python bench/async_producers.py --old /tmp/old-tree --rows loop-events --runs 9

Rows, each the median of ``--runs`` runs, each run in a fresh process per tree
(``PYTHONPATH`` set to it), the trees in turns so other work on the machine hits both alike:

- ``loop``: ``--calls`` sends one by one from one ``asyncio.run``, in sends per second.
- ``loop, events``: the same with task-sent events on (``Hub(events=True)``).
- ``fresh loop``: a process whose hub already sent (its bridge connections are open) runs
  ``asyncio.run`` of one ``delay_async()`` ``--fresh`` times; the median time of one such
  ``asyncio.run``, in milliseconds (a loop per request, or an async task run by
  ``asyncio.run`` in a thread or prefork pool, pays this per send).

Every process uses its own Redis key prefix and removes what it made. Not a test: nothing
here asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
MODES = ["loop", "loop-events", "fresh"]


def child(mode: str, calls: int, fresh: int) -> float:
    """One measure of ``mode`` with the hubbub on ``sys.path`` (run in its own process)."""
    from hubbub import Hub

    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    hub = Hub(f"{REDIS}?prefix={prefix}", results="none", events=mode == "loop-events")
    noop = hub.task(lambda: None, name="noop")
    try:
        if mode == "fresh":
            noop.delay()  # the process has sent: its bridge connections are open

            async def once() -> None:
                await noop.delay_async()

            took = []
            for _ in range(fresh):
                started = time.perf_counter()
                asyncio.run(once())
                took.append(time.perf_counter() - started)
            return statistics.median(took) * 1000

        async def many() -> float:
            for _ in range(20):  # connect and warm up
                await noop.delay_async()
            started = time.perf_counter()
            for _ in range(calls):
                await noop.delay_async()
            return calls / (time.perf_counter() - started)

        return asyncio.run(many())
    finally:
        hub.close()
        sys.path.insert(0, str(HERE))
        from _common import delete_prefix

        delete_prefix(REDIS, prefix)


def measure(tree: Path, mode: str, calls: int, fresh: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--calls", str(calls),
         "--fresh", str(fresh)], env=env, capture_output=True, text=True, timeout=600,
        check=False)
    if out.returncode:
        raise SystemExit(f"{tree} {mode} failed:\n{out.stderr}")
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, help="the tree to compare with (required)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--fresh", type=int, default=100)
    parser.add_argument("--rows", nargs="+", choices=MODES, default=MODES)
    parser.add_argument("--child", choices=MODES)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.calls, args.fresh)))
        return
    if args.old is None:
        parser.error("--old TREE is required (e.g. from git worktree add --detach /tmp/old main)")
    new = HERE.parent
    print(f"Redis {REDIS}, {args.calls} sends per loop, {args.fresh} fresh loops, "
          f"median of {args.runs} runs (old {args.old}, new {new})")
    print(f"{'row':<14} {'old':>10} {'new':>10} {'new/old':>8}")
    for mode in args.rows:
        samples: dict[str, list[float]] = {"old": [], "new": []}
        for run in range(args.runs):
            order = [("old", args.old), ("new", new)]
            for name, tree in order if run % 2 == 0 else order[::-1]:
                samples[name].append(measure(tree, mode, args.calls, args.fresh))
        old, now = statistics.median(samples["old"]), statistics.median(samples["new"])
        unit = "ms/loop" if mode == "fresh" else "sends/s"
        print(f"{mode:<14} {old:>10.2f} {now:>10.2f} {now / old:>8.2f}  {unit}  "
              f"(old {samples['old']}, new {samples['new']})")
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
