"""Concurrency of the worker pools: I/O fan-out, CPU parallelism, and one big I/O drain.

    python bench/concurrency.py                        # io, cpu, headline
    python bench/concurrency.py --only io --runs 5
    python bench/concurrency.py --only headline --headline-tasks 200000 --coroutines 5000

Every measurement is a real worker process (``python -m hubbub worker -A benchapp:hub``) on
a fresh embedded SQLite broker file with results off (``HUBBUB_RESULTS=none``). Tasks are
enqueued with ``delay_many`` in batches of 5,000 before the worker starts, and only the
drain is timed. Figures are medians of ``--runs`` runs. Not a test: nothing here asserts
timings.

- io: tasks that each wait 50 ms (``await asyncio.sleep(0.05)`` as an ``async def`` task on
  async and hybrid; ``time.sleep(0.05)`` as a sync task on threads, prefork and gevent),
  against the ideal ``tasks x 0.05 s / concurrency``.
- cpu: tasks of about 50 ms of pure-Python work (a loop calibrated on this machine) on
  solo, ``threads -c 2`` and ``prefork -c 2``; the speed-up is over solo.
- headline: --headline-tasks I/O tasks in one hybrid worker, with its peak memory.

Two wall times per run: "drain" from starting the worker process to the queue being empty
(includes starting the interpreter, the pool's children and the final acks), and "span"
from the first task's start to the last task's end, read from a ledger: each task notes
``start end`` in memory, and a thread of each process appends what piled up to one
``O_APPEND`` file every 10 ms (a write per task would cost the async worker ~5%). "peak in
flight" is the most tasks the ledger shows running at once. "CPU per task" is the user +
system time of the worker process (+ its children) from its first task to the empty queue,
over the tasks: where the ideal is out of reach, it says which process ran out of core
(for long tasks it is mostly the worker's idle cost). Memory is the sum over the worker and
its children, read from ``/proc``: the highest sampled sum of VmRSS, and the sum of each
process's VmHWM (its own peak) read when the queue is empty. The watcher stays cheap: it
stats the ledger every 10 ms and counts the queue only when the ledger is complete or
every 0.5 s, as a count scans the table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _common import cpu_seconds, pending, proc_kib
from rich.console import Console
from rich.table import Table

from hubbub import Hub
from hubbub._loader import load_hub

TREE = Path(__file__).resolve().parent.parent  # the source tree this benchmark measures
WAIT = 0.05  # seconds each I/O task waits, and roughly what each CPU task computes
BATCH = 5000  # calls per delay_many
LINE = len(b"%.6f %.6f\n" % (time.time(), time.time()))  # bytes per ledger line
APP = textwrap.dedent("""
    import asyncio
    import collections
    import os
    import threading
    import time

    from hubbub import Hub

    hub = Hub()   # $HUBBUB_BROKER; results off through $HUBBUB_RESULTS=none
    LEDGER = os.environ.get("BENCH_LEDGER")
    _lines = collections.deque()
    _begun = False


    def _begin():
        # The first task of each process leaves a mark: the benchmark's start-up is over.
        global _begun
        if not _begun and LEDGER is not None:
            _begun = True
            os.close(os.open(LEDGER + ".started", os.O_WRONLY | os.O_CREAT, 0o644))
        return time.time()


    def _note(started, ended):
        # A deque append is thread-safe and far cheaper than a write per task; a daemon
        # thread (a greenlet in the gevent child) writes what piled up every 10 ms.
        if LEDGER is not None:
            _lines.append(b"%.6f %.6f\\n" % (started, ended))


    def _write_forever():
        fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        while True:
            time.sleep(0.01)
            chunk = []
            while _lines:
                chunk.append(_lines.popleft())
            if chunk:
                os.write(fd, b"".join(chunk))  # O_APPEND: whole, across processes


    if LEDGER is not None:
        threading.Thread(target=_write_forever, name="bench-ledger", daemon=True).start()


    @hub.task(name="io_async")
    async def io_async(seconds):
        started = _begin()
        await asyncio.sleep(seconds)
        _note(started, time.time())


    @hub.task(name="io_sync")
    def io_sync(seconds):
        started = _begin()
        time.sleep(seconds)
        _note(started, time.time())


    def spin(n):
        total = 0
        for i in range(n):
            total += i * i % 7
        return total


    @hub.task(name="cpu")
    def cpu(n):
        started = _begin()
        spin(n)
        _note(started, time.time())
""")
console = Console(width=200)  # the tables are wide; a pipe would get 80 columns


@dataclass
class Run:
    """One drain by one worker process."""

    enqueue: float  # seconds delay_many took to send the tasks (before the worker starts)
    drain: float  # seconds from starting the worker to an empty queue
    span: float | None  # seconds from the first task's start to the last task's end
    in_flight: int  # most tasks running at once, per the ledger
    tasks: int  # tasks the ledger saw
    mean_task: float | None  # seconds from a task's start to its end, on average
    rss_mib: float  # highest sampled sum of VmRSS, worker and children
    hwm_mib: float  # sum of VmHWM of the worker and its children at the end
    cpu_worker: float  # CPU seconds (user + system) of the worker process from the first task
    cpu_children: float  # the same for its children (prefork, hybrid, gevent)
    processes: int  # worker and children seen
    warnings: int  # lines at WARNING or above in the worker's log


class Scratch:
    """A folder with the benchmark app, a fresh SQLite broker file per measurement."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hubbub-concurrency-"))
        (self.dir / "benchapp.py").write_text(APP)
        sys.path.insert(0, str(self.dir))
        self.count = 0

    def next(self) -> tuple[str, Path]:
        """A broker URL and a ledger path no measurement used before."""
        self.count += 1
        return f"sqlite:///{self.dir / f'b{self.count}.db'}", self.dir / f"l{self.count}.txt"

    def hub(self, url: str) -> Hub:
        os.environ["HUBBUB_BROKER"] = url
        os.environ["HUBBUB_RESULTS"] = "none"
        sys.modules.pop("benchapp", None)
        return load_hub("benchapp:hub")

    def env(self, url: str, ledger: Path) -> dict[str, str]:
        # The workers import hubbub from this source tree, not whichever one is installed.
        path = os.pathsep.join(filter(None, [str(self.dir), str(TREE),
                                             os.environ.get("PYTHONPATH")]))
        return {**os.environ, "HUBBUB_BROKER": url, "HUBBUB_RESULTS": "none",
                "PYTHONPATH": path, "BENCH_LEDGER": str(ledger)}


def fill(hub: Hub, task: str, n: int, arg: float | int) -> float:
    """Enqueue ``n`` calls in batches of ``BATCH``; the seconds it took."""
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        hub.tasks[task].delay_many([(arg,)] * min(BATCH, n - start))
    return time.perf_counter() - started


# -- processes and memory, from /proc ----------------------------------------------------------

def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def is_ours(pid: int) -> bool:
    """Still a process of this benchmark's workers (not a reused pid)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"hubbub" in cmdline


# -- one drain ---------------------------------------------------------------------------------

def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def read_ledger(ledger: Path) -> tuple[float | None, int, int, float | None]:
    """(span, most tasks at once, tasks, mean task time) from the ``start end`` lines."""
    if not ledger.exists():
        return None, 0, 0, None
    pairs = [tuple(map(float, line.split())) for line in ledger.read_text().splitlines()]
    if not pairs:
        return None, 0, 0, None
    span = max(end for _, end in pairs) - min(start for start, _ in pairs)
    mean = statistics.fmean(end - start for start, end in pairs)
    events = sorted([(s, 1) for s, _ in pairs] + [(e, -1) for _, e in pairs])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return span, peak, len(pairs), mean


def drain(scratch: Scratch, pool: list[str], task: str, n: int, arg: float | int,
          poll: float = 0.01) -> Run:
    """Enqueue ``n`` tasks, start one worker with ``pool`` options, time the drain."""
    url, ledger = scratch.next()
    hub = scratch.hub(url)
    log = ledger.with_suffix(".log")
    begun = Path(f"{ledger}.started")
    seen: set[int] = set()
    try:
        enqueue = fill(hub, task, n, arg)
        command = [sys.executable, "-m", "hubbub", "worker", "-A", "benchapp:hub", *pool,
                   "-l", "warning"]
        with log.open("w") as out:
            started = time.perf_counter()
            proc = subprocess.Popen(command, env=scratch.env(url, ledger), cwd=scratch.dir,
                                    stdout=out, stderr=subprocess.STDOUT)
        try:
            rss, pids = 0.0, [proc.pid]
            scan_at = rss_at = check_at = 0.0
            base: dict[int, float] | None = None  # CPU used when the first task started
            expected = n * LINE
            deadline = time.monotonic() + 900
            while True:
                now = time.monotonic()
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {proc.returncode}:\n"
                                       f"{log.read_text()[-2000:]}")
                if now > deadline:
                    raise TimeoutError(f"{n} tasks not drained in 900 s")
                # Watching must not slow the worker down on 2 cores: scanning /proc for its
                # children costs ~5 ms and a count of the queue scans the table.
                if now >= scan_at:
                    pids, scan_at = descendants(proc.pid), now + 1.0
                    seen.update(pids)
                if now >= rss_at:
                    rss_at = now + 0.1
                    rss = max(rss, sum(proc_kib(p, "VmRSS") for p in pids) / 1024)
                if base is None and begun.exists():  # start-up is over: imports, children
                    pids = descendants(proc.pid)
                    base = {p: cpu_seconds(p) for p in pids}
                done = size(ledger) >= expected
                if done or now >= check_at:
                    check_at = now + 0.5
                    if not pending(hub):
                        break
                time.sleep(poll)
            elapsed = time.perf_counter() - started
            settle = time.monotonic() + 1.0  # the ledger's writers lag by up to 10 ms
            while size(ledger) < expected and time.monotonic() < settle:
                time.sleep(0.01)
            pids = descendants(proc.pid)
            seen.update(pids)
            rss = max(rss, sum(proc_kib(p, "VmRSS") for p in pids) / 1024)
            hwm = sum(proc_kib(p, "VmHWM") for p in pids) / 1024
            base = base or {}
            used = {p: cpu_seconds(p) - base.get(p, 0.0) for p in pids}
            cpu_worker = used.pop(proc.pid, 0.0)
            cpu_children = sum(used.values())
        finally:
            stop(proc, seen)
    finally:
        hub.close()
    span, in_flight, done, mean = read_ledger(ledger)
    warnings = sum(1 for line in log.read_text().splitlines()
                   if (" WARNING " in line or " ERROR " in line) and "SIGTERM" not in line)
    return Run(enqueue, elapsed, span, in_flight, done, mean, rss, hwm, cpu_worker, cpu_children,
               len(seen), warnings)


def stop(proc: subprocess.Popen[bytes], seen: set[int]) -> None:
    """SIGTERM the worker (it stops its children); kill whatever of ours is left."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in seen - {proc.pid}:
        if is_ours(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def median_run(runs: list[Run]) -> Run:
    """Each figure's median across runs (the runs are alike; medians resist a disturbance)."""
    spans = [r.span for r in runs if r.span is not None]
    means = [r.mean_task for r in runs if r.mean_task is not None]
    return Run(statistics.median(r.enqueue for r in runs),
               statistics.median(r.drain for r in runs),
               statistics.median(spans) if spans else None,
               int(statistics.median(r.in_flight for r in runs)),
               int(statistics.median(r.tasks for r in runs)),
               statistics.median(means) if means else None,
               statistics.median(r.rss_mib for r in runs),
               statistics.median(r.hwm_mib for r in runs),
               statistics.median(r.cpu_worker for r in runs),
               statistics.median(r.cpu_children for r in runs),
               max(r.processes for r in runs), sum(r.warnings for r in runs))


def measured(label: str, sample: Run) -> Run:
    """``sample``, after printing it with the load it ran under (to spot disturbed runs)."""
    console.print(f"  {label}: drain {sample.drain:.2f}s, span {fmt(sample.span)}, in flight "
                  f"{sample.in_flight}, rss {sample.rss_mib:.0f} MiB, cpu "
                  f"{sample.cpu_worker:.2f}s + {sample.cpu_children:.2f}s, load "
                  f"{os.getloadavg()[0]:.2f}")
    return sample


def repeat(runs: int, label: str, measure: Callable[[], Run]) -> Run:
    """The median of ``runs`` runs of ``measure``."""
    return median_run([measured(f"{label} run {i + 1}/{runs}", measure())
                       for i in range(runs)])


def per_task(run: Run) -> str:
    """CPU microseconds per task after start-up: the worker's, plus its children's."""
    worker = run.cpu_worker * 1e6 / run.tasks if run.tasks else 0.0
    if not run.cpu_children:
        return f"{worker:,.0f} µs"
    return f"{worker:,.0f} + {run.cpu_children * 1e6 / run.tasks:,.0f} µs"


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}s"


# -- the parts ---------------------------------------------------------------------------------

# Every row names its worker's event loop (``--loop``; "auto" would pick uvloop where it is
# installed): asyncio's, and the async pool once more on uvloop when it is installed.
ASYNCIO = ["--loop", "asyncio"]
IO_CASES = [  # label, pool options, task, concurrency, tasks (None: --io-tasks)
    ("async", ["--pool", "async", "-c", "1000", *ASYNCIO], "io_async", 1000, None),
    *([("async uvloop", ["--pool", "async", "-c", "1000", "--loop", "uvloop"], "io_async",
        1000, None)] if importlib.util.find_spec("uvloop") is not None else []),
    ("hybrid", ["--pool", "hybrid", "-c", "2", "--coroutines", "500", *ASYNCIO], "io_async",
     1000, None),
    ("gevent", ["--pool", "gevent", "-c", "1000", *ASYNCIO], "io_sync", 1000, None),
    ("threads", ["--pool", "threads", "-c", "200", *ASYNCIO], "io_sync", 200, None),
    ("prefork", ["--pool", "prefork", "-c", "2", *ASYNCIO], "io_sync", 2, 400),
]


def io_part(scratch: Scratch, n: int, runs: int) -> Table:
    table = Table(title=f"io: tasks that wait {WAIT * 1000:.0f} ms, one worker, SQLite broker, "
                        f"results off, median of {runs}")
    for column in ("pool", "options", "task", "tasks", "ideal", "drain", "drain / ideal",
                   "span", "span / ideal", "peak in flight", "CPU per task", "peak RSS",
                   "warnings"):
        table.add_column(column, justify="left" if column in {"pool", "options", "task"}
                         else "right")
    for label, options, task, concurrency, count in IO_CASES:
        tasks = count or n
        ideal = tasks * WAIT / concurrency
        result = repeat(runs, f"io {label}",
                        lambda o=options, t=task, k=tasks: drain(scratch, o, t, k, WAIT))
        table.add_row(label, " ".join(options), task, f"{tasks:,}", f"{ideal:.2f}s",
                      fmt(result.drain), f"{result.drain / ideal:.2f}x", fmt(result.span),
                      f"{result.span / ideal:.2f}x" if result.span else "-",
                      f"{result.in_flight:,}", per_task(result), f"{result.rss_mib:.0f} MiB",
                      str(result.warnings))
    return table


def calibrate(target: float = WAIT) -> int:
    """Loop iterations of ``spin`` that take ``target`` seconds here.

    Refined three times on the best of five timings each, the last ones at full length: one
    short timing taken while other work runs on the machine can be off by half.
    """
    import benchapp  # the scratch app: the very loop the workers run

    n = 200_000
    for _ in range(3):
        best = min(_timed(benchapp.spin, n) for _ in range(5))
        n = int(n * target / best)
    return n


def _timed(fn: Callable[[int], object], n: int) -> float:
    started = time.perf_counter()
    fn(n)
    return time.perf_counter() - started


CPU_CASES = [  # label, pool options
    ("solo", ["--pool", "solo", *ASYNCIO]),
    ("threads", ["--pool", "threads", "-c", "2", *ASYNCIO]),
    ("prefork", ["--pool", "prefork", "-c", "2", *ASYNCIO]),
]


def cpu_part(scratch: Scratch, n: int, runs: int) -> Table:
    scratch.hub(scratch.next()[0]).close()  # imports the app (on a scratch broker) to calibrate
    loops = calibrate()
    # Rounds of solo, threads, prefork in turn: a disturbance from other work on the machine
    # then hits every pool, not one. It still hits prefork hardest (it needs both cores), so
    # the best run is shown next to the median.
    samples: dict[str, list[Run]] = {label: [] for label, _ in CPU_CASES}
    for i in range(runs):
        for label, options in CPU_CASES:
            run = drain(scratch, options, "cpu", n, loops)
            samples[label].append(measured(f"cpu {label} run {i + 1}/{runs}", run))
    table = Table(title=f"cpu: {n} tasks of ~{WAIT * 1000:.0f} ms pure Python "
                        f"(spin({loops:,})), one worker, median of {runs} (and best)")
    for column in ("pool", "options", "drain", "speed-up", "best drain", "best speed-up",
                   "span", "span speed-up", "mean task time", "CPU per task"):
        table.add_column(column, justify="left" if column in {"pool", "options"} else "right")
    solo = median_run(samples["solo"])
    solo_best = min(r.drain for r in samples["solo"])
    for label, options in CPU_CASES:
        result = median_run(samples[label])
        best = min(r.drain for r in samples[label])
        mean = f"{result.mean_task * 1000:.0f} ms" if result.mean_task else "-"
        table.add_row(label, " ".join(options), fmt(result.drain),
                      f"{solo.drain / result.drain:.2f}x", fmt(best), f"{solo_best / best:.2f}x",
                      fmt(result.span),
                      f"{solo.span / result.span:.2f}x" if solo.span and result.span else "-",
                      mean, per_task(result))
    return table


def headline_part(scratch: Scratch, n: int, processes: int, coroutines: int,
                  runs: int) -> Table:
    options = ["--pool", "hybrid", "-c", str(processes), "--coroutines", str(coroutines),
               *ASYNCIO]
    concurrency = processes * coroutines
    ideal = n * WAIT / concurrency
    result = repeat(runs, "headline", lambda: drain(scratch, options, "io_async", n, WAIT))
    table = Table(title=f"headline: {n:,} async tasks of {WAIT * 1000:.0f} ms in one worker, "
                        f"SQLite broker, results off, median of {runs}")
    for column in ("options", "enqueue", "ideal", "drain", "drain / ideal", "tasks/s", "span",
                   "peak in flight", "CPU per task", "processes", "peak RSS (sum)",
                   "sum of VmHWM"):
        table.add_column(column, justify="left" if column == "options" else "right")
    table.add_row(" ".join(options), fmt(result.enqueue), f"{ideal:.2f}s", fmt(result.drain),
                  f"{result.drain / ideal:.1f}x", f"{n / result.drain:,.0f}", fmt(result.span),
                  f"{result.in_flight:,}", per_task(result), str(result.processes),
                  f"{result.rss_mib:.0f} MiB", f"{result.hwm_mib:.0f} MiB")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="io,cpu,headline",
                        help="comma-separated parts: io, cpu, headline")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs per figure, medians (default: 3; headline 1)")
    parser.add_argument("--io-tasks", type=int, default=20_000)
    parser.add_argument("--cpu-tasks", type=int, default=400)
    parser.add_argument("--headline-tasks", type=int, default=200_000)
    parser.add_argument("--processes", type=int, default=2, help="headline: hybrid -c")
    parser.add_argument("--coroutines", type=int, default=5000, help="headline: per child")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch folder (broker files, ledgers, worker logs)")
    args = parser.parse_args()
    parts = args.only.split(",")
    unknown = set(parts) - {"io", "cpu", "headline"}
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose io, cpu, headline")
    scratch = Scratch()
    load_at_start = os.getloadavg()
    tables = []
    try:
        if "io" in parts:
            tables.append(io_part(scratch, args.io_tasks, args.runs or 3))
        if "cpu" in parts:
            tables.append(cpu_part(scratch, args.cpu_tasks, args.runs or 3))
        if "headline" in parts:
            tables.append(headline_part(scratch, args.headline_tasks, args.processes,
                                        args.coroutines, args.runs or 1))
    finally:
        if args.keep:
            console.print(f"kept {scratch.dir}")
        else:
            shutil.rmtree(scratch.dir, ignore_errors=True)
    for table in tables:
        console.print(table)
    console.print(f"command: python bench/concurrency.py {' '.join(sys.argv[1:])}".rstrip())
    console.print(f"{datetime.date.today()}, {os.cpu_count()} cores, Python "
                  f"{platform.python_version()}; load average (1, 5, 15 min) at start: "
                  "{:.2f} {:.2f} {:.2f}, at end: {:.2f} {:.2f} {:.2f}".format(
                      *load_at_start, *os.getloadavg()))


if __name__ == "__main__":
    main()
