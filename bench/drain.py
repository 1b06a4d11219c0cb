"""Drain speed of sync tasks on the process and thread pools, new code against old, and
against Dramatiq and Huey in the same run (issue #18).

    python bench/drain.py                                   # this checkout only
    python bench/drain.py --old /tmp/old-prefork            # and an older checkout beside it
    python bench/drain.py --brokers redis --pools prefork --runs 5 --tasks 10000

Two sync tasks: ``noop`` returns None; ``incr`` does one Redis INCR (a client per process,
made on first use). Each is drained by one worker with ``--pool prefork|threads|hybrid`` and 2
processes (threads: 8), on SQLite and on Redis, results off (neither peer keeps results by
default; ``--results`` keeps hubbub's, in the broker's store). ``--tasks-kinds anoop`` drains
an ``async def`` no-op, which hybrid's children run as coroutines on their loops.

- ``warm`` rows time the worker loop alone: the pool is started (children ready) before the
  clock starts, and it runs until the queue is empty (``stop_when_idle``). They compare the code
  in this checkout with ``--old``'s (a ``git worktree`` of the commit to compare against), each
  run in a process of its own with that code first on ``PYTHONPATH``.
  They also give the CPU time per task of the worker's process and of its children (from
  ``getrusage`` and ``/proc/<pid>/stat``), which, unlike the rate, does not depend on what
  else the machine runs.
- ``cold`` rows time ``hubbub worker --pool prefork -c 2`` from its start until the queue is
  empty, as bench/peers/*.py time their workers: Dramatiq ``-p 2 -t 8`` on Redis and Huey
  ``-k process -w 2`` on SQLite, both draining no-op tasks (the peers' scripts have no INCR
  task). Peers need bench/setup_peers.sh; without it those rows are left out and said so.

Figures are medians of ``--runs`` runs taken in turns (new, old, peer, new, old, peer...), so
other work on the machine disturbs every side alike; ratios are taken within this run. Not a
test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

from _common import delete_prefix, in_turns
from _common import pending as _pending

HERE = Path(__file__).resolve().parent
NEW = HERE.parent
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
REDIS = "redis://127.0.0.1:6379/0"
APP = textwrap.dedent("""
    import os

    import redis

    from hubbub import Hub

    hub = Hub()   # $HUBBUB_BROKER, $HUBBUB_RESULTS
    _client = None

    @hub.task(name="noop")
    def noop() -> None:
        return None

    @hub.task(name="anoop")
    async def anoop() -> None:
        return None

    @hub.task(name="incr")
    def incr() -> None:
        global _client
        if _client is None:
            _client = redis.Redis.from_url(os.environ["DRAIN_REDIS"])
        _client.incr(os.environ["DRAIN_KEY"])
""")
CONCURRENCY = {"prefork": 2, "hybrid": 2, "threads": 8}


# -- one measurement, in a process of its own (``--one``) ------------------------------------

def _hub(broker: str, folder: Path, key: str) -> object:
    url = f"sqlite:///{folder / 'drain.db'}" if broker == "sqlite" else f"{REDIS}?prefix={key}"
    os.environ.update(HUBBUB_BROKER=url, HUBBUB_RESULTS="none", DRAIN_REDIS=REDIS,
                      DRAIN_KEY=f"{key}:incr")
    if os.environ.get("DRAIN_RESULTS"):  # --results: kept in the broker's store
        del os.environ["HUBBUB_RESULTS"]
    from hubbub._loader import load_hub

    return load_hub("drainapp:hub")


def _fill(hub: object, task: str, n: int) -> None:
    for start in range(0, n, 1000):
        hub.tasks[task].delay_many([()] * min(1000, n - start))  # type: ignore[attr-defined]


def _children_cpu(pool: object) -> float:
    """CPU seconds the pool's children have used so far (Linux)."""
    children = getattr(pool, "children", None)
    total = 0.0
    for pid in children.pids if children is not None else []:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _warm(hub: object, pool_kind: str, n: int) -> dict[str, float]:
    from hubbub import WorkerLoop
    from hubbub.worker.pools import make_pool

    options = {"import_path": "drainapp:hub"} if pool_kind != "threads" else {}
    pool = make_pool(pool_kind, CONCURRENCY[pool_kind], **options)

    async def drain() -> dict[str, float]:
        await pool.start(hub)  # type: ignore[arg-type]
        stop = pool.stop

        async def nothing(*_: object) -> None:  # the loop's own start and stop: ours, here
            return None

        pool.start = pool.stop = nothing  # type: ignore[method-assign]
        children, own, begun = _children_cpu(pool), _own_cpu(), time.perf_counter()
        await WorkerLoop(hub, pool=pool, stop_when_idle=True).run()  # type: ignore[arg-type]
        elapsed = time.perf_counter() - begun
        own, children = _own_cpu() - own, _children_cpu(pool) - children  # before they exit
        await stop()
        return {"rate": n / elapsed, "parent_us": own / n * 1e6, "child_us": children / n * 1e6}

    return asyncio.run(drain())


def _cold(hub: object, pool_kind: str, n: int, folder: Path) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ["PYTHONPATH"]])}
    begun = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hubbub", "worker", "-A", "drainapp:hub",
                             "--pool", pool_kind, "-c", str(CONCURRENCY[pool_kind]), "-l",
                             "error"], env=env, cwd=folder)
    try:
        deadline = time.monotonic() + 600
        while _pending(hub) and time.monotonic() < deadline:
            time.sleep(0.01)
        return n / (time.perf_counter() - begun)
    finally:
        proc.terminate()
        proc.wait(60)


def one(pool_kind: str, broker: str, task: str, n: int, mode: str) -> None:
    """Drain ``n`` tasks once and print ``{"rate": tasks per second}``."""
    folder = Path(tempfile.mkdtemp(prefix="hubbub-drain-"))
    (folder / "drainapp.py").write_text(APP)
    sys.path.insert(0, str(folder))
    key = f"drain-bench-{uuid.uuid4().hex[:10]}"
    hub = _hub(broker, folder, key)
    try:
        _fill(hub, task, n)
        figures = (_warm(hub, pool_kind, n) if mode == "warm"
                   else {"rate": _cold(hub, pool_kind, n, folder)})
    finally:
        hub.close()  # type: ignore[attr-defined]
        delete_prefix(REDIS, key)
    print(json.dumps(figures))


# -- the table ---------------------------------------------------------------------------------

CPU: dict[tuple[Path, str], list[tuple[float, float]]] = {}  # (code, row) -> (parent, child)


def run_one(code: Path, *args: str) -> float | None:
    """One measurement with the hubbub at ``code``: its rate (its CPU per task is kept in
    ``CPU``); None (said so) when it failed."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    # From a neutral folder: a child (python -c) imports hubbub from its working directory
    # first, which from a checkout would mix that checkout's children with ``code``'s parent.
    out = subprocess.run([sys.executable, str(Path(__file__)), "--one", *args], env=env,
                         cwd=tempfile.gettempdir(), capture_output=True, text=True,
                         timeout=900, check=False)
    if out.returncode:
        print(f"run left out ({code}: {' '.join(args)}):\n{out.stderr[-1500:]}", file=sys.stderr)
        return None
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    if "parent_us" in figures:
        CPU.setdefault((code, " ".join(args)), []).append((figures["parent_us"],
                                                            figures["child_us"]))
    rate: float = figures["rate"]
    return rate


def cpu(code: Path | None, what: tuple[str, ...]) -> str:
    """Median CPU µs per task, worker process + children, of a warm row."""
    samples = CPU.get((code, " ".join(("--pool", *what)))) if code is not None else None
    if not samples:
        return "-"
    parent = statistics.median(s[0] for s in samples)
    child = statistics.median(s[1] for s in samples)
    return f"{parent:.0f} + {child:.0f} µs"


def run_peer(script: str, n: int, env: dict[str, str], *args: str) -> float | None:
    if not PEERS_PYTHON.exists():
        return None
    out = subprocess.run([str(PEERS_PYTHON), str(HERE / "peers" / script), "drain", str(n),
                          *args], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=900, check=False)
    if out.returncode:
        print(f"peer run left out ({script}):\n{out.stderr[-1500:]}", file=sys.stderr)
        return None
    value: float = next(iter(json.loads(out.stdout.strip().splitlines()[-1]).values()))
    return value


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def rate(value: float | None) -> str:
    return f"{value:,.0f}/s" if value else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pool", default="prefork", help=argparse.SUPPRESS)
    parser.add_argument("--broker", default="sqlite", help=argparse.SUPPRESS)
    parser.add_argument("--task", default="noop", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="warm", help=argparse.SUPPRESS)
    parser.add_argument("--old", type=Path, help="a checkout of the code to compare against")
    parser.add_argument("--brokers", default="sqlite,redis")
    parser.add_argument("--pools", default="prefork,threads,hybrid")
    parser.add_argument("--tasks-kinds", default="noop,incr")
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per drain")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--results", action="store_true",
                        help="hubbub keeps results (in the broker's store); peers do not")
    args = parser.parse_args()
    if args.results:  # read by each measurement's process (``--one``)
        os.environ["DRAIN_RESULTS"] = "1"
    if args.one:
        one(args.pool, args.broker, args.task, args.tasks, args.mode)
        return
    print(f"$ python bench/drain.py {' '.join(sys.argv[1:])}")
    print(f"load average at start: {os.getloadavg()}")
    rows: list[tuple[str, ...]] = []
    for broker in args.brokers.split(","):
        for pool in args.pools.split(","):
            for task in args.tasks_kinds.split(","):
                what = (pool, "--broker", broker, "--task", task, "--tasks", str(args.tasks))
                measures = [lambda w=what: run_one(NEW, "--pool", *w)]
                if args.old:
                    measures.append(lambda w=what: run_one(args.old, "--pool", *w))
                new, *old = in_turns(args.runs, *measures)
                rows.append((broker, f"warm {pool} x{CONCURRENCY[pool]}", task,
                             f"{rate(new)} ({cpu(NEW, what)})",
                             f"{rate(old[0]) if old else '-'} ({cpu(args.old, what)})",
                             ratio(new, old[0] if old else None)))
                print(*rows[-1], sep=" | ", flush=True)
        if not args.no_peers:
            rows.extend(peer_rows(broker, args))
    print()
    print("CPU per task in brackets: the worker's process + its children, medians")
    print("| broker | drain | task | hubbub (this code) | compared with | ratio |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nmedians of {args.runs} runs of {args.tasks} tasks; load average at end: "
          f"{os.getloadavg()}")


def peer_rows(broker: str, args: argparse.Namespace) -> list[tuple[str, ...]]:
    """hubbub ``worker --pool prefork -c 2`` from its start, next to a peer's worker."""
    cold = ("prefork", "--broker", broker, "--task", "noop", "--tasks", str(args.tasks),
            "--mode", "cold")
    measures = [lambda: run_one(NEW, "--pool", *cold)]
    if args.old:
        measures.append(lambda: run_one(args.old, "--pool", *cold))
    if broker == "redis":
        name = "Dramatiq -p 2 -t 8"
        measures.append(lambda: run_peer("dramatiq_redis.py", args.tasks, {
            "BENCH_REDIS": REDIS, "BENCH_PREFIX": f"dramatiq-drain-{uuid.uuid4().hex[:8]}"},
            "--pool", "p2t8"))
    else:
        name = "Huey -k process -w 2"
        measures.append(lambda: run_peer("huey_peer.py", args.tasks, {
            "BENCH_BROKER": "sqlite", "BENCH_PREFIX": f"hueydrain{uuid.uuid4().hex[:8]}"}))
    if not PEERS_PYTHON.exists():
        print("peers not installed (bash bench/setup_peers.sh): peer rows left out")
    new, *rest = in_turns(args.runs, *measures)
    old = rest[0] if args.old else None
    peer = rest[-1]
    label = "cold prefork x2 (worker start included)"
    rows = [(broker, label, "noop", rate(new), f"{name}: {rate(peer)}", ratio(new, peer))]
    if args.old:
        rows.append((broker, label, "noop", rate(new), f"old code: {rate(old)}",
                     ratio(new, old)))
    for row in rows:
        print(*row, sep=" | ", flush=True)
    return rows


if __name__ == "__main__":
    main()
