"""Workflows: a group, a chord and a chain, hubbub's canvas against Celery's on one Redis.

    python bench/workflows.py                        # 10,000 / 10,000 / 1,000, 3 runs
    python bench/workflows.py --group 2000 --chord 2000 --chain 200 --runs 1
    python bench/workflows.py --group 1 --chord 1 --chain 1000 --only async   # chain hops
    python bench/workflows.py --old /tmp/old-group --only hubbub   # and an older checkout

Each run starts a worker process on a fresh key prefix (hubbub: ``--pool async -c 100``
and ``--pool prefork -c 2``, ``-l warning`` unless ``--log-level``; Celery: ``--pool prefork
-c 2``, its usual setup, with its Redis result backend, ``--loglevel error``), waits until it
serves, then times from the send to the moment the
caller has read the results: every member's for the group, the body's for the chord, the last
step's for the chain (reported per hop); "send" is the caller's part of the group's time,
until ``delay()`` returned. Worker start-up is not timed. Figures are medians of --runs runs,
taken in turns so other load on the machine disturbs every system alike. Each hubbub run is a
process of its own, its caller and worker on the code at this checkout, or with ``--old TREE``
also at TREE (a ``git worktree`` of the commit to compare against), in turns with this one.
Celery comes from bench/.venv-peers (bench/setup_peers.sh); without it its rows are left out
and said so. Not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from _common import cpu_seconds, delete_prefix
from rich.console import Console
from rich.table import Table

from hubbub import Hub, chain, chord, group
from hubbub._loader import load_hub
from hubbub.errors import ResultTimeout

HERE = Path(__file__).resolve().parent
NEW = HERE.parent
POOLS = {"async": ["--pool", "async", "-c", "100"], "prefork": ["--pool", "prefork", "-c", "2"]}
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
APP = textwrap.dedent("""
    from hubbub import Hub
    hub = Hub()   # $HUBBUB_BROKER, results in the same Redis

    @hub.task(name="noop")
    def noop(x: int) -> int:
        return x

    @hub.task(name="total")
    def total(values: list[int]) -> int:
        return len(values)

    @hub.task(name="inc")
    def inc(x: int) -> int:
        return x + 1
""")
console = Console(width=170)


def run_hubbub(folder: Path, redis_url: str, pool: list[str], sizes: tuple[int, int, int],
               level: str) -> dict[str, float]:
    prefix = f"hubbub-wf-{uuid.uuid4().hex[:10]}"
    url = f"{redis_url}?prefix={prefix}"
    os.environ["HUBBUB_BROKER"] = url
    os.environ.pop("HUBBUB_RESULTS", None)
    sys.modules.pop("wfapp", None)
    hub: Hub = load_hub("wfapp:hub")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}
    log = folder / f"{prefix}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hubbub", "worker", "-A", "wfapp:hub",
                                 *pool, "-l", level], env=env, cwd=folder, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        noop, total, inc = (hub.tasks[n] for n in ("noop", "total", "inc"))
        try:  # the worker serves: warm, connections open on both sides
            noop.delay(0).get(timeout=60)
        except ResultTimeout:
            raise SystemExit(f"hubbub worker did not start:\n{log.read_text()}") from None
        n_group, n_chord, n_chain = sizes
        out = {}
        cpu = worker_cpu(proc.pid)
        started = time.perf_counter()
        members = group(noop.s(i) for i in range(n_group)).delay()
        out["send"] = time.perf_counter() - started
        members.get(timeout=600)
        out["group"] = time.perf_counter() - started
        out["group cpu"], cpu = worker_cpu(proc.pid) - cpu, worker_cpu(proc.pid)
        started = time.perf_counter()
        body = chord([noop.s(i) for i in range(n_chord)], total.s()).delay()
        assert body.get(timeout=600) == n_chord
        out["chord"] = time.perf_counter() - started
        out["chord cpu"], cpu = worker_cpu(proc.pid) - cpu, worker_cpu(proc.pid)
        started = time.perf_counter()
        last = chain(noop.s(0), *(inc.s() for _ in range(n_chain - 1))).delay()
        assert last.get(timeout=600) == n_chain - 1
        out["chain"] = time.perf_counter() - started
        out["chain cpu"] = worker_cpu(proc.pid) - cpu
        return out
    finally:
        proc.terminate()
        proc.wait(60)
        hub.close()
        delete_prefix(redis_url, prefix)


def worker_cpu(pid: int) -> float:
    """CPU seconds used so far by worker process ``pid`` and its live children (a prefork
    pool's): unlike wall time, barely moved by other load on the machine."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        total += sum(cpu_seconds(int(child)) for child in children)
    return total


def run_celery(redis_url: str, sizes: tuple[int, int, int]) -> dict[str, float] | None:
    if not PEERS_PYTHON.exists():
        return None
    prefix = f"celery-wf-{uuid.uuid4().hex[:10]}:"
    done = subprocess.run(
        [str(PEERS_PYTHON), str(HERE / "peers" / "celery_canvas.py"), *map(str, sizes)],
        env={**os.environ, "BENCH_REDIS": redis_url, "BENCH_PREFIX": prefix},
        capture_output=True, text=True, timeout=1800, check=False)
    result: dict[str, float] = {}
    for line in done.stdout.splitlines():  # one line per measurement; null: timed out
        if line.startswith("{"):
            for name, value in json.loads(line).items():
                if name in ("group", "chord", "chain"):
                    result[name] = math.inf if value is None else value
    if done.returncode != 0 or len(result) < 3:
        console.print(f"[red]celery run incomplete[/red]: {done.stderr[-1500:]}")
    return result or None


def measure_hubbub(code: Path, pool: str, args: argparse.Namespace) -> dict[str, float] | None:
    """One run of hubbub at ``code`` (caller and worker) with ``pool``, in a process of its
    own; None (said so) when it failed."""
    command = [sys.executable, str(Path(__file__)), "--one", pool, "--group", str(args.group),
               "--chord", str(args.chord), "--chain", str(args.chain), "--redis-url",
               args.redis_url, "--log-level", args.log_level]
    # From a neutral folder, so that only ``code`` is imported (not this checkout's hubbub).
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(code)},
                          cwd=tempfile.gettempdir(), capture_output=True, text=True,
                          timeout=1800, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        console.print(f"[red]hubbub run left out ({code}, {pool})[/red]: {done.stderr[-1500:]}")
        return None
    figures: dict[str, float] = json.loads(lines[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--group", type=int, default=10_000)
    parser.add_argument("--chord", type=int, default=10_000)
    parser.add_argument("--chain", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--log-level", default="warning",
                        help="hubbub workers' log level (Celery's run at 'error'; 'info' "
                             "logs a line per task)")
    parser.add_argument("--only", action="append", default=[], metavar="SYSTEM",
                        help="run only the systems whose name contains this (repeatable), "
                             "e.g. --only async")
    parser.add_argument("--old", type=Path,
                        help="a checkout of the code to compare against (hubbub rows)")
    parser.add_argument("--one", choices=sorted(POOLS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = (args.group, args.chord, args.chain)
    if args.one:  # one hubbub run, in this process: its figures as JSON
        folder = Path(tempfile.mkdtemp(prefix="hubbub-wf-"))
        (folder / "wfapp.py").write_text(APP)
        sys.path.insert(0, str(folder))
        print(json.dumps(run_hubbub(folder, args.redis_url, POOLS[args.one], sizes,
                                    args.log_level)))
        return
    systems: dict[str, Callable[[], dict[str, float] | None]] = {}
    for pool in POOLS:
        name = f"hubbub {' '.join(POOLS[pool][1:])}"
        systems[name] = functools.partial(measure_hubbub, NEW, pool, args)
        if args.old:
            systems[f"{name} (old)"] = functools.partial(measure_hubbub, args.old, pool, args)
    systems["celery prefork -c 2"] = lambda: run_celery(args.redis_url, sizes)
    if args.only:
        systems = {n: m for n, m in systems.items() if any(o in n for o in args.only)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    load = [os.getloadavg()[0]]
    for i in range(args.runs):
        for name, measure in systems.items():  # in turns
            result = measure()
            if result is not None:
                runs[name].append(result)
                console.print(f"run {i + 1} {name}: " + ", ".join(
                    f"{k} {v:.3f}s" for k, v in result.items()), soft_wrap=True)
    load.append(os.getloadavg()[0])
    medians = {name: {k: statistics.median(r.get(k, math.inf) for r in rs)
                      for k in ("group", "send", "chord", "chain", "group cpu", "chord cpu",
                                "chain cpu")}
               for name, rs in runs.items() if rs}
    celery = medians.get("celery prefork -c 2")
    table = Table(title=f"workflows on Redis: group {args.group:,}, chord {args.chord:,}, "
                        f"chain {args.chain:,} (median of {args.runs})")
    for column in ("system", "group s", "send s", "chord s", "chain s", "chain ms/hop",
                   "group vs celery", "chord vs celery", "chain vs celery",
                   "worker CPU ms/task g/c/h"):
        table.add_column(column, justify="left" if column == "system" else "right")
    def ratio(theirs: float, ours: float) -> str:
        if math.isinf(theirs):
            return "celery timed out"
        return f"{theirs / ours:.1f}x"

    def secs(value: float) -> str:
        return "timed out" if math.isinf(value) else f"{value:.2f}"

    for name, m in medians.items():
        ratios = [ratio(celery[k], m[k]) if celery else "-" for k in ("group", "chord", "chain")]
        cpu = "/".join("-" if math.isinf(m[f"{k} cpu"]) else f"{m[f'{k} cpu'] / n * 1000:.2f}"
                       for k, n in (("group", args.group), ("chord", args.chord),
                                    ("chain", args.chain)))
        send = "-" if math.isinf(m["send"]) else f"{m['send']:.2f}"  # Celery's: not kept
        table.add_row(name, secs(m["group"]), send, secs(m["chord"]), secs(m["chain"]),
                      secs(m["chain"] / args.chain * 1000), *ratios, cpu)
    console.print(table)
    if celery is None:
        console.print("Celery rows left out: run bench/setup_peers.sh first")
    console.print(f"$ python bench/workflows.py {' '.join(sys.argv[1:])}")
    console.print(f"load average (1 min) at start {load[0]:.2f}, at end {load[1]:.2f}; "
                  f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
