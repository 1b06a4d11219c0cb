"""Idle memory of a worker, per pool: what ``hubbub worker`` costs before any task runs.

    python bench/memory.py                                  # every pool, SQLite, 3 runs
    python bench/memory.py --pools async --brokers sqlite,redis --baseline /tmp/hubbub-base

Each run starts ``hubbub worker -A memapp:hub --pool POOL`` on a fresh broker (an SQLite
file, or a Redis key prefix), waits ``--settle`` seconds for it to go idle, and reads from
``/proc``: the worker's own VmRSS, and the PSS (proportional set size: pages shared after a
fork counted once) summed over the worker and its children. ``--baseline DIR`` runs the worker
from another source tree in turns with this one. Medians of ``--runs`` runs. Not a test.

On Redis, an idle arq worker (``arq arq_redis.WorkerSettings`` from bench/peers, in the
peers' venv that bench/setup_peers.sh makes) is measured in the same turns: the row ``arq``,
and the column "vs arq" (each hubbub row's RSS over arq's on that broker). "above bare" gives
each worker's RSS less that of its bare interpreter (``python -c pass``, read at exit, median
of 3).

The row ``this tree`` is hubbub on this interpreter, whose site-packages are not what a user of
``pip install hubbub[redis]`` gets: .pth files, and the OpenTelemetry SDK (a test dependency
here) that redis-py 8 imports whenever it is installed. The row ``clean venv`` runs the same
tree on bench/.venv-hubbub, which bench/setup_peers.sh fills with hubbub's dependencies only
(``pip install <repo>[redis]``, then hubbub itself uninstalled so that the tree is what runs):
hubbub as a user installs it (``base clean``: the ``--baseline`` tree there). Its "vs arq"
compares two venvs of their own, which differ in one more thing than the workers' code: their
redis-py (hubbub needs 6.1 or later; the peers' venv pins 5.x for taskiq-redis and kombu, and
the newer one costs more to import). So the same arq package also runs on bench/.venv-hubbub,
hubbub's interpreter and redis-py: the row ``arq here`` and the column "vs here", which
compare the workers' own code and nothing else. The last lines print the redis-py versions
and split the gap between ``clean venv`` and ``arq``.

Every row runs with compiled modules, as an install has them: pip writes the ``.pyc`` files of
what it installs, but a source tree run under ``PYTHONDONTWRITEBYTECODE`` (set on this
machine) compiles hubbub from source at each start, which no user does (here about 1.7 MiB
more RSS right after the imports, 0.3 MiB once the worker is idle). So the ``hubbub``
package of each tree (and bench/peers) is copied into the run's folder and compiled there
once; the rows run those copies.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from _common import proc_kib

HERE = Path(__file__).resolve().parent
ARQ = HERE / ".venv-peers" / "bin" / "arq"
CLEAN_PYTHON = HERE / ".venv-hubbub" / "bin" / "python"
TREE = HERE.parent
APP = textwrap.dedent("""
    from hubbub import Hub
    hub = Hub()   # $HUBBUB_BROKER

    @hub.task(name="noop")
    async def noop() -> None:
        return None
""")
POOLS = {"async": [], "threads": [], "solo": [], "prefork": ["-c", "2"],
         "hybrid": ["-c", "2"], "gevent": []}
ROWS = {  # what each row is, printed under the table
    "this tree": "hubbub from this tree, on this interpreter (its site-packages)",
    "clean venv": "the same tree on bench/.venv-hubbub (hubbub[redis]'s dependencies only)",
    "baseline": "hubbub from --baseline, on this interpreter",
    "base clean": "hubbub from --baseline, on bench/.venv-hubbub",
    "arq": "arq in bench/.venv-peers (its own venv)",
    "arq here": "that arq on hubbub's interpreter and redis-py (bench/.venv-hubbub, "
                "or this interpreter without it)",
}


@dataclass(frozen=True)
class Worker:
    """What one row runs: hubbub from ``tree`` (None: arq) on the interpreter ``python``."""

    tree: Path | None
    python: str = sys.executable

    @property
    def arq(self) -> bool:
        return self.tree is None


def children(root: int) -> list[int]:
    """``root`` and every process below it."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def install(folder: Path, trees: set[Path], pythons: set[str]) -> dict[Path, Path]:
    """Copies of the trees' ``hubbub`` packages and of bench/peers in ``folder``, compiled by
    each interpreter that will run them, as an install is (see the top): each tree's copy,
    by tree. Everything else (the standard library, site-packages) keeps the ``.pyc`` files
    it has, so every row reads compiled modules and none compiles any."""
    copies = {}
    for number, tree in enumerate(sorted(trees)):
        copy = folder / "trees" / str(number)
        shutil.copytree(tree / "hubbub", copy / "hubbub",
                        ignore=shutil.ignore_patterns("__pycache__"))
        copies[tree] = copy
    shutil.copytree(HERE / "peers", folder / "peers", ignore=shutil.ignore_patterns("__pycache__"))
    for python in sorted(pythons):
        subprocess.run([python, "-m", "compileall", "-q", str(folder / "trees"),
                        str(folder / "peers"), str(folder / "memapp.py")],
                       check=True, timeout=300, stdout=subprocess.DEVNULL)
    return copies


def one_run(folder: Path, worker: Worker, pool: str, broker: str, settle: float,
            redis_url: str) -> tuple[float, float, int]:
    """(worker VmRSS MiB, PSS MiB over worker and children, processes) of one idle worker."""
    token = uuid.uuid4().hex[:8]
    url = (f"sqlite:///{folder / f'{token}.db'}" if broker == "sqlite"
           else f"{redis_url}?prefix=memory-{token}")
    if worker.tree is not None:
        path = os.pathsep.join(filter(None, [str(folder), str(worker.tree),
                                             os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "HUBBUB_BROKER": url, "PYTHONPATH": path}
        command = [worker.python, "-m", "hubbub", "worker", "-A", "memapp:hub",
                   "--pool", pool, *POOLS[pool], "-l", "error"]
    else:  # arq, the peer: its worker of bench/peers/arq_redis.py
        env = {**os.environ, "BENCH_REDIS": redis_url, "BENCH_PREFIX": f"memory-{token}",
               "PYTHONPATH": str(folder / "peers")}
        command = [str(ARQ), "arq_redis.WorkerSettings"]
        if worker.python != str(ARQ.parent / "python"):  # the same, on hubbub's interpreter
            env["PYTHONPATH"] = os.pathsep.join([str(folder / "arq-only"), str(folder / "peers")])
            command = [worker.python, "-c", "from arq.cli import cli; cli()",
                       "arq_redis.WorkerSettings"]
    quiet = subprocess.DEVNULL if worker.arq else None  # arq logs its polls
    proc = subprocess.Popen(command, env=env, cwd=folder, stdout=quiet, stderr=quiet)
    try:
        time.sleep(settle)
        if proc.poll() is not None:
            raise RuntimeError(f"--pool {pool} worker exited with {proc.returncode}")
        pids = children(proc.pid)
        rss = proc_kib(proc.pid, "VmRSS") / 1024
        pss = sum(proc_kib(p, "Pss", "smaps_rollup") for p in pids) / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if broker == "redis":
            import redis

            with redis.Redis.from_url(redis_url) as client:
                for pattern in (f"memory-{token}:*", f"{{memory-{token}:*", f"memory-{token}"):
                    keys = list(client.scan_iter(match=pattern, count=500))
                    if keys:
                        client.unlink(*keys)
    return rss, pss, len(pids)


def bare_rss(python: str, env: dict[str, str], imports: str = "") -> float:
    """MiB of VmRSS of ``python`` that imports nothing itself (site still runs), or only
    the comma-separated modules ``imports``."""
    code = (f"import {imports}\n" if imports else "") + (
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') "
        "if l.startswith('VmRSS:')))")
    return statistics.median(
        int(subprocess.run([python, "-c", code], env=env, capture_output=True, text=True,
                           check=True, timeout=60).stdout) / 1024 for _ in range(3))


def redis_version(python: str) -> str:
    """redis-py's version on ``python``, or "none"."""
    done = subprocess.run([python, "-c", "import redis; print(redis.__version__)"],
                          capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip() or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pools", default="async,threads,solo,prefork,hybrid")
    parser.add_argument("--brokers", default="sqlite")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=4.0,
                        help="seconds from start to the reading")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another hubbub source tree to run the worker from, in turns")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hubbub-memory-"))
    (folder / "memapp.py").write_text(APP)
    clean = str(CLEAN_PYTHON) if CLEAN_PYTHON.exists() else None
    workers = {"this tree": Worker(TREE)}
    if clean:
        workers["clean venv"] = Worker(TREE, clean)
    if args.baseline is not None:
        workers["baseline"] = Worker(args.baseline.resolve())
        if clean:
            workers["base clean"] = Worker(args.baseline.resolve(), clean)
    peers: dict[str, Worker] = {}
    if ARQ.exists():
        peers["arq"] = Worker(None, str(ARQ.parent / "python"))
        package = next(HERE.glob(".venv-peers/lib/python*/site-packages/arq"), None)
        if package is not None:
            (folder / "arq-only").mkdir()
            (folder / "arq-only" / "arq").symlink_to(package)
            peers["arq here"] = Worker(None, clean or sys.executable)
    pythons = {"this python": sys.executable, "clean venv": clean,
               "peers' venv": peers["arq"].python if peers else None}
    bare = {python: bare_rss(python, {**os.environ, "PYTHONPATH": str(TREE)})
            for python in pythons.values() if python}
    copies = install(folder, {w.tree for w in workers.values() if w.tree is not None},
                     {w.python for w in (workers | peers).values()})
    workers = {name: Worker(copies[w.tree], w.python) for name, w in workers.items()
               if w.tree is not None}
    rows = []
    for broker in args.brokers.split(","):
        for pool in args.pools.split(","):
            turns = {name: w for name, w in workers.items()
                     if pool != "gevent" or w.python != clean}  # an extra it does not have
            if broker == "redis" and pool == args.pools.split(",")[0]:
                turns.update(peers)  # once per broker, in the turns of its first pool
            samples: dict[str, list[tuple[float, float, int]]] = {t: [] for t in turns}
            for _ in range(args.runs):
                for name, worker in turns.items():
                    samples[name].append(one_run(folder, worker, pool, broker, args.settle,
                                                 args.redis_url))
            for name, s in samples.items():
                rows.append((broker, "-" if name in peers else pool, name,
                             statistics.median(r for r, _, _ in s),
                             statistics.median(p for _, p, _ in s), max(n for _, _, n in s)))
    print(f"idle worker memory, median of {args.runs} runs, read {args.settle:g}s after start, "
          f"Python {platform.python_version()}")
    header = (f"{'broker':7} {'pool':8} {'worker':10} {'RSS MiB':>8} {'PSS sum MiB':>11} "
              f"{'processes':>9} {'RSS ratio':>9} {'vs arq':>7} {'vs here':>7} "
              f"{'above bare':>10}")
    print(header)
    print("-" * len(header))
    rss_of = {(b, p, n): r for b, p, n, r, _, _ in rows}
    base_of = {"this tree": "baseline", "clean venv": "base clean"}
    for broker, pool, name, rss, pss, count in rows:
        base = rss_of.get((broker, pool, base_of.get(name, "")))
        ratio = f"{rss / base:.2f}x" if base else ""
        vs = {peer: f"{rss / rss_of[(broker, '-', peer)]:.2f}x"
              if (broker, "-", peer) in rss_of and name not in peers else "" for peer in peers}
        above = rss - bare[(workers | peers)[name].python]
        print(f"{broker:7} {pool:8} {name:10} {rss:8.1f} {pss:11.1f} {count:9d} {ratio:>9} "
              f"{vs.get('arq', ''):>7} {vs.get('arq here', ''):>7} {above:10.1f}")
    shown = {name for _, _, name, _, _, _ in rows}
    print("rows: " + "; ".join(f"'{name}' = {what}" for name, what in ROWS.items()
                               if name in shown))
    print("RSS ratio: over the same interpreter's baseline row; vs arq, vs here: over that "
          "peer's RSS on the broker")
    print("bare interpreters (MiB): " + ", ".join(
        f"{key} {bare[python]:.1f}" for key, python in pythons.items() if python))
    print("redis-py: " + ", ".join(f"{key} {redis_version(python)}"
                                   for key, python in pythons.items() if python))
    if not clean:
        print("no 'clean venv' row: bench/setup_peers.sh makes bench/.venv-hubbub")
    # Where the clean venvs' gap comes from: "arq here" is arq on hubbub's interpreter and
    # redis-py, so arq here less arq is the redis-py releases and clean venv less arq here is
    # the workers' own code. The floor is what every asyncio worker on redis-py with a click
    # CLI imports before a line of its own: the interpreter, asyncio, redis.asyncio, click.
    env = {**os.environ, "PYTHONPATH": str(TREE)}
    for broker, pool, name, rss, _, _ in rows:
        arq, here = rss_of.get((broker, "-", "arq")), rss_of.get((broker, "-", "arq here"))
        if name == "clean venv" and clean and arq is not None and here is not None:
            gap, peer = rss - arq, peers["arq"].python
            floor = {python: bare_rss(python, env, "asyncio, redis.asyncio, click")
                     for python in (clean, peer)}
            print(f"{broker} --pool {pool}: hubbub in its clean venv ({rss:.1f} MiB) is "
                  f"{abs(gap):.1f} MiB {'above' if gap > 0 else 'below'} arq in its own "
                  f"({arq:.1f} MiB): redis-py {redis_version(clean)} over "
                  f"{redis_version(peer)} {here - arq:+.1f} (arq here less arq), the workers' "
                  f"own code {rss - here:+.1f} (clean venv less arq here). The floor (the "
                  f"interpreter, asyncio, redis.asyncio, click): {floor[clean]:.1f} MiB on "
                  f"hubbub's venv, {floor[peer]:.1f} on arq's; above it hubbub's code costs "
                  f"{rss - floor[clean]:.1f} MiB and arq's {arq - floor[peer]:.1f}")
    print(f"command: python bench/memory.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
