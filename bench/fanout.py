"""I/O fan-out on the async pool: 20,000 tasks that each ``await asyncio.sleep(0.05)``.

    python bench/fanout.py                                  # 20,000 tasks, -c 1000, 3 runs
    python bench/fanout.py --runs 5 --baseline /tmp/hubbub-base

One ``hubbub worker --pool async -c 1000`` process drains tasks enqueued beforehand on a fresh
SQLite file, results off: the measurement of ``bench/concurrency.py --only io`` (its drain,
ledger and /proc readings are reused), for the async pool only. The ideal is
``tasks x 0.05 s / concurrency``; "drain / ideal" includes starting the worker, "span /
ideal" is first task start to last task end. "CPU per task" is the worker's user + system
time from its first task to the empty queue, over the tasks: what the loop spends on
fetching, admitting, starting and settling one task.

This tree's worker runs once per event loop of ``--loops`` (``hubbub worker --loop``; by
default asyncio's, and uvloop when it is installed), a row each, so that each figure says
which loop gave it.

``--baseline DIR`` runs the worker from another source tree (e.g. ``git archive`` of an older
commit unpacked in DIR) in turns with this tree's, so all see the same load; the ratio
columns are each row over the baseline. A baseline runs with its own default loop (a tree
older than ``--loop`` runs asyncio's; a newer one, uvloop where it is installed), or with
``--baseline-loop NAME``. Medians of ``--runs`` runs. Not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
from pathlib import Path

import concurrency

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
WAIT = concurrency.WAIT


class TreeScratch(concurrency.Scratch):
    """``concurrency.Scratch`` whose workers import hubbub from ``tree``."""

    def __init__(self, tree: Path) -> None:
        super().__init__()
        self.tree = tree

    def env(self, url: str, ledger: Path) -> dict[str, str]:
        env = super().env(url, ledger)
        env["PYTHONPATH"] = os.pathsep.join([str(self.dir), str(self.tree),
                                             os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another hubbub source tree to run the worker from, in turns")
    uvloop = importlib.util.find_spec("uvloop") is not None
    parser.add_argument("--loops", default="asyncio,uvloop" if uvloop else "asyncio",
                        help="this tree's event loops, a row each (default: asyncio, and "
                             "uvloop when it is installed)")
    parser.add_argument("--baseline-loop", default=None,
                        help="the baseline's --loop (default: none given, its default loop)")
    args = parser.parse_args()
    options = ["--pool", "async", "-c", str(args.concurrency)]
    # row name -> (source tree, worker options)
    rows = {loop: (TREE, [*options, "--loop", loop]) for loop in args.loops.split(",")}
    if args.baseline is not None:
        rows["baseline"] = (args.baseline.resolve(), options if args.baseline_loop is None
                            else [*options, "--loop", args.baseline_loop])
    scratches = {name: TreeScratch(tree) for name, (tree, _) in rows.items()}
    ideal = args.tasks * WAIT / args.concurrency
    load_at_start = os.getloadavg()
    runs: dict[str, list[concurrency.Run]] = {name: [] for name in rows}
    for i in range(args.runs):
        for name, scratch in scratches.items():  # in turns: a disturbance hits all alike
            run = concurrency.drain(scratch, rows[name][1], "io_async", args.tasks, WAIT)
            runs[name].append(concurrency.measured(f"{name} run {i + 1}/{args.runs}", run))
    medians = {name: concurrency.median_run(r) for name, r in runs.items()}
    print(f"\nfan-out: {args.tasks:,} tasks x {WAIT * 1000:.0f} ms, --pool async -c "
          f"{args.concurrency}, SQLite, results off, ideal {ideal:.2f}s, median of {args.runs} "
          f"runs, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("rows: this tree's worker with --loop NAME; the baseline tree's with "
          + ("its default loop" if args.baseline_loop is None else f"--loop {args.baseline_loop}"))
    header = (f"{'worker':10} {'drain':>7} {'drain/ideal':>11} {'span':>7} {'span/ideal':>10} "
              f"{'CPU/task µs':>11} {'drain ratio':>11} {'CPU ratio':>9}")
    print(header)
    print("-" * len(header))
    base = medians.get("baseline")
    for name, m in medians.items():
        cpu = m.cpu_worker * 1e6 / m.tasks if m.tasks else 0.0
        base_cpu = base.cpu_worker * 1e6 / base.tasks if base and base.tasks else 0.0
        span = f"{m.span:.2f}s" if m.span else "-"
        span_ratio = f"{m.span / ideal:.2f}x" if m.span else "-"
        print(f"{name:10} {m.drain:6.2f}s {m.drain / ideal:10.2f}x {span:>7} {span_ratio:>10} "
              f"{cpu:11,.0f} {f'{m.drain / base.drain:.2f}x' if base else '':>11} "
              f"{f'{cpu / base_cpu:.2f}x' if base_cpu else '':>9}")
    print(f"command: python bench/fanout.py {' '.join(sys.argv[1:])}".rstrip())
    print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}, at end: "
          "{:.2f} {:.2f} {:.2f}".format(*load_at_start, *os.getloadavg()))
    print("spread of drains: " + "; ".join(
        f"{name} {min(r.drain for r in rs):.2f}-{max(r.drain for r in rs):.2f}s "
        f"(stdev {statistics.pstdev(r.drain for r in rs):.2f}s)" for name, rs in runs.items()))


if __name__ == "__main__":
    main()
