"""Runs hubbub against Celery, Dramatiq, Huey, Taskiq, arq and RQ, and writes docs/benchmarks.md.

    python bench/report.py                 # 3 runs of 500 tasks per measure (~10 min)
    python bench/report.py --quick         # 1 run of 200 tasks: a smoke run
    python bench/report.py --runs 5 --tasks 2000 --out /tmp/benchmarks.md

Every figure on the page comes from this run: nothing is carried over. Each measurement is a
driver in bench/peers/ (bench/peers/_driver.py defines what is timed) started as a process of
its own: hubbub's with this interpreter and the repository on PYTHONPATH, the peers' with
bench/.venv-peers (bash bench/setup_peers.sh makes it). Runs are taken in rounds (every row
of every table once, then again), so that other work on the machine disturbs every system
alike; a row's figure is the median of its runs, with their min-max, and the ratio is
hubbub's median over the peer's. A run that fails is reported on the page, not hidden.

Redis at --redis-url (loopback): each run uses a key prefix of its own and deletes its keys.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
PEER_PACKAGES = ("celery", "kombu", "dramatiq", "huey", "taskiq", "taskiq-redis", "arq", "rq",
                 "redis")


@dataclass(frozen=True)
class Row:
    """One system's line in a table: which driver runs, how, and what it is compared with.

    Args:
        key: unique within its table; a peer's ``versus`` names a hubbub row's key.
        system: the library, as printed.
        how: how it runs, as printed (Markdown).
        script: the driver, a file in bench/peers/.
        args: the driver's arguments after the mode and N.
        env: added to the driver's environment (``BENCH_BROKER=sqlite``).
        versus: the key of the hubbub row this row's ratio is taken against; None for
            hubbub's own rows.
        scale: N times this for this row, instead of the table's ``scale``.
    """

    key: str
    system: str
    how: str
    script: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    versus: str | None = None
    # Overrides the table's ``scale`` for this row: the systems that take seconds for N
    # tasks (a fork per job, a poll every 0.5 s) keep N where the others drain 10 x N.
    scale: int | None = None

    @property
    def is_hubbub(self) -> bool:
        return self.script == "hubbub_side.py"


@dataclass(frozen=True)
class Table:
    """One measure: a heading, what it measures, the driver mode and its rows.

    ``metric`` is the key of the driver's JSON line the table shows. A table with
    ``runs_with`` set runs nothing itself: it shows another metric of that table's runs (the
    p99 of the runs that gave the p50).
    """

    key: str
    title: str
    about: str
    mode: str  # the driver's mode: "enqueue", "drain" or "latency"
    rows: tuple[Row, ...]
    unit: str = "tasks/s"
    metric: str = "rate"
    higher_is_better: bool = True
    runs_with: str | None = None
    # Sends one by one take milliseconds for N tasks, too short to time well: such tables
    # send ``scale`` times N, every system alike.
    scale: int = 1


def drain_rows(task: str, t: tuple[str, ...] | None = None) -> tuple[Row, ...]:
    """hubbub's three pools and each peer's usual worker, running ``task`` on Redis."""
    t = ("--task", task) if t is None else t
    sync, coro = "a sync task", "an `async def` task"
    return (
        Row("prefork", "hubbub", f"`hubbub worker --pool prefork -c 2`, {sync}",
            "hubbub_side.py", (*t, "--pool", "prefork")),
        Row("threads", "hubbub", f"`hubbub worker --pool threads`, {sync}",
            "hubbub_side.py", (*t, "--pool", "threads")),
        Row("async", "hubbub", f"`hubbub worker --pool async`, {coro}",
            "hubbub_side.py", (*t, "--pool", "async")),
        Row("celery", "Celery", f"`celery worker --pool prefork -c 2`, {sync}",
            "celery_redis.py", t, versus="prefork"),
        Row("dramatiq", "Dramatiq", f"`dramatiq -p 2 -t 8`, {sync}",
            "dramatiq_redis.py", t, versus="prefork"),
        Row("huey", "Huey", f"`huey_consumer -k process -w 2` (RedisHuey), {sync}",
            "huey_peer.py", t, versus="prefork"),
        Row("rq", "RQ", f"2 x `rq worker` (a fork per job), {sync}",
            "rq_redis.py", t, versus="prefork", scale=1),
        Row("taskiq", "Taskiq", f"`taskiq worker` (2 processes), {coro}",
            "taskiq_peer.py", t, versus="async"),
        Row("arq", "arq", f"`arq` (one process; its defaults: 10 jobs at a time, the queue "
            f"polled every 0.5 s), {coro}",
            "arq_redis.py", t, versus="async", scale=1),
    )


SQLITE = {"BENCH_BROKER": "sqlite"}
TABLES = (
    Table("drain-noop", "Drain of no-op tasks on Redis",
          "10 x N no-op tasks are queued (in bulk where the library can, not timed), then "
          "the worker starts; the rate counts from the first task seen done to the last, so "
          "the worker's start-up is left out. The drain is polled every 5 ms, and N tasks "
          "take the faster systems 20 to 100 ms, too short to time well; RQ and arq, which "
          "take seconds for N, drain N. Sync peers are compared with hubbub's prefork "
          "pool (the CLI's default), `async def` peers with hubbub's async pool; Dramatiq "
          "runs 8 threads in each process, so hubbub's threads row is its closer match.",
          "drain", drain_rows("noop"), scale=10),
    Table("drain-incr", "Drain of tasks that make one Redis INCR",
          "The same, with tasks that each make one Redis round trip (an INCR on a "
          "connection kept per process: redis-py for sync tasks, redis.asyncio for "
          "`async def` ones), closer to real work. The drain ends when the counter reaches "
          "its target, so it counts tasks that ran, for every system alike (10 x N tasks; "
          "N for RQ and arq).",
          "drain", drain_rows("incr"), scale=10),
    Table("enqueue", "Enqueue one by one, from one thread",
          "10 x N sends of a no-op task (N sends take hundredths of a second, too short to "
          "time well), one at a time, each waiting for its broker's reply (`await` for the "
          "async libraries), after one send to connect. hubbub's `delay()` polls its "
          "socket for Redis's reply for up to 100 us before it sleeps (a thread that sleeps "
          "also pays for its CPU going idle and waking); the second row turns that off "
          "(`?spin_us=0`) and sleeps for every reply as the peers do. The last two rows "
          "are no library: one `XADD` of a message of the same size written on a bare "
          "socket and its reply read (`bench/peers/floor_redis.py`), sleeping in `recv` "
          "or polling: the floor of a send that waits for its reply each way; a ratio to "
          "one says how much of each send a library spends beyond the round trip itself.",
          "enqueue", (
              Row("delay", "hubbub", "`task.delay()`", "hubbub_side.py"),
              Row("delay-sleep", "hubbub", "`task.delay()`, `?spin_us=0`: sleeps for "
                  "every reply", "hubbub_side.py", (), {"BENCH_HUBBUB_QUERY": "spin_us=0"}),
              Row("celery", "Celery", "`task.delay()`", "celery_redis.py", versus="delay"),
              Row("dramatiq", "Dramatiq", "`actor.send()`", "dramatiq_redis.py",
                  versus="delay"),
              Row("huey", "Huey", "`task()` (RedisHuey)", "huey_peer.py", versus="delay"),
              Row("rq", "RQ", "`queue.enqueue(f)`", "rq_redis.py", versus="delay"),
              Row("taskiq", "Taskiq", "`await task.kiq()`", "taskiq_peer.py",
                  versus="delay"),
              Row("arq", "arq", "`await pool.enqueue_job(...)`", "arq_redis.py",
                  versus="delay"),
              Row("floor", "(none)", "a bare round trip: `XADD` on a socket, sleeping in "
                  "`recv`", "floor_redis.py", versus="delay-sleep"),
              Row("floor-poll", "(none)", "a bare round trip: `XADD` on a socket, polling "
                  "for the reply", "floor_redis.py", (), {"BENCH_FLOOR": "poll"},
                  versus="delay"),
          ), scale=10),
    Table("bulk", "Enqueue in bulk",
          "N sends through the library's bulk API, by 1,000. Only RQ of the peers has one.",
          "enqueue", (
              Row("delay_many", "hubbub", "`task.delay_many(...)`", "hubbub_side.py",
                  ("--bulk",)),
              Row("rq", "RQ", "`queue.enqueue_many(...)`", "rq_redis.py", ("--bulk",),
                  versus="delay_many"),
          )),
    Table("latency-p50", "Pickup latency at 200 tasks/s: p50",
          "The worker runs first; then N tasks are sent one by one at 200 a second, each "
          "with its send time, and each pushes the time from its send to its start onto a "
          "Redis list (one round trip, like INCR). A system that cannot run 200 tasks a "
          "second falls behind, and its latency grows with the run.",
          "latency", drain_rows("stamp", ()), unit="ms", metric="p50",
          higher_is_better=False),
    Table("latency-p99", "Pickup latency at 200 tasks/s: p99",
          "The 99th percentile of the same runs.",
          "latency", drain_rows("stamp", ()), unit="ms", metric="p99",
          higher_is_better=False, runs_with="latency-p50"),
    Table("sqlite", "Embedded: SQLite, no server",
          "hubbub's default broker, an SQLite file, against Huey's SqliteHuey (the only "
          "peer with an embedded broker): the no-op drain as above. SqliteHuey never "
          "acknowledges (at-most-once); hubbub acks every task after it ran. 10 x N tasks.",
          "drain", (
              Row("prefork", "hubbub", "drain: `--pool prefork -c 2`, a sync task",
                  "hubbub_side.py", ("--pool", "prefork"), SQLITE),
              Row("async", "hubbub", "drain: `--pool async`, an `async def` task",
                  "hubbub_side.py", ("--pool", "async"), SQLITE),
              Row("huey", "Huey", "drain: `huey_consumer -k process -w 2`, a sync task",
                  "huey_peer.py", (), SQLITE, versus="prefork"),
          ), scale=10),
    Table("sqlite-enqueue", "Embedded: enqueue one by one on SQLite",
          "10 x N `delay()` calls one by one into hubbub's SQLite file against Huey's "
          "`task()` into SqliteHuey's.",
          "enqueue", (
              Row("delay", "hubbub", "`task.delay()`", "hubbub_side.py", (), SQLITE),
              Row("huey", "Huey", "`task()` (SqliteHuey)", "huey_peer.py", (), SQLITE,
                  versus="delay"),
          ), scale=10),
)


Samples = dict[tuple[str, str], list[float]]
Failures = dict[tuple[str, str], list[str]]


def run_driver(script: str, args: Sequence[str], env: Mapping[str, str], *, hubbub: bool,
               timeout: float) -> dict[str, float]:
    """Run the driver ``bench/peers/<script>`` (hubbub's with this interpreter, a peer's with
    the peers' venv) and return its JSON line. Raises RuntimeError if it fails or runs past
    ``timeout`` (then it gets SIGTERM, on which it stops its workers and deletes its keys)."""
    python = sys.executable if hubbub else str(PEERS_PYTHON)
    # A fresh SQLite folder per run unless the caller names one.
    inherited = {k: v for k, v in os.environ.items() if k != "BENCH_SQLITE_DIR"}
    full = {**inherited, "BENCH_TIMEOUT": str(max(timeout - 30, 10)), **env,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([python, str(HERE / "peers" / script), *args], env=full,
                            cwd=HERE / "peers", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise RuntimeError(f"{script}: timed out after {timeout:.0f}s") from None
    if proc.returncode:
        raise RuntimeError((err.strip().splitlines() or [f"exit {proc.returncode}"])[-1])
    line: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return line


def run_row(table: Table, row: Row, n: int, redis_url: str, token: str,
            timeout: float) -> dict[str, float]:
    """One run of one row: the driver's JSON line. Raises RuntimeError on failure."""
    prefix = f"hbb{token}{uuid.uuid4().hex[:6]}"  # letters and digits: Huey keeps only those
    env = {**row.env, "BENCH_REDIS": redis_url, "BENCH_PREFIX": prefix}
    return run_driver(row.script, [table.mode, str(n), *row.args], env,
                      hubbub=row.is_hubbub, timeout=timeout)


def measure(tables: Sequence[Table], runs: int, n: int, redis_url: str,
            peers: bool) -> tuple[Samples, Failures]:
    samples: Samples = {}
    failures: Failures = {}
    token = uuid.uuid4().hex[:6]
    for round_ in range(runs):
        for table in tables:
            if table.runs_with is not None:
                continue
            # This table and those that show other metrics of its runs.
            shown = [t for t in tables if table.key in (t.key, t.runs_with)]
            for row in table.rows:
                if not row.is_hubbub and not peers:
                    continue
                started = dt.datetime.now(dt.UTC)
                try:
                    scale = row.scale if row.scale is not None else table.scale
                    line = run_row(table, row, n * scale, redis_url, token, timeout=300)
                except RuntimeError as exc:
                    for t in shown:
                        failures.setdefault((t.key, row.key), []).append(str(exc))
                    print(f"run {round_ + 1}: {table.key}/{row.key} failed: {exc}", flush=True)
                    continue
                for t in shown:
                    samples.setdefault((t.key, row.key), []).append(line[t.metric])
                took = (dt.datetime.now(dt.UTC) - started).total_seconds()
                print(f"run {round_ + 1}: {table.key}/{row.key}: {line[table.metric]:,.1f} "
                      f"{table.unit} ({took:.1f}s)", flush=True)
    return samples, failures


# --- the machine and the versions ---------------------------------------------------------

def _first_line(path: str, key: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.partition(":")[2].strip()
    return "unknown"


def rabbitmq_version() -> str:
    """The RabbitMQ on loopback, from its AMQP handshake; 'not reachable' otherwise."""
    try:
        import asyncio

        import aiormq  # hubbub[amqp]

        async def ask() -> str:
            conn = await asyncio.wait_for(
                aiormq.connect("amqp://guest:guest@127.0.0.1:5672/"), 5)
            try:
                version = conn.server_properties.get("version", b"?")
                return version.decode() if isinstance(version, bytes) else str(version)
            finally:
                await conn.close()

        return asyncio.run(ask())
    except Exception:  # any failure means: not reachable from here
        return "not reachable"


def machine(redis_url: str) -> dict[str, str]:
    import redis

    with redis.Redis.from_url(redis_url) as client:
        redis_version = str(client.info("server")["redis_version"])
    mem_kb = _first_line("/proc/meminfo", "MemTotal").split()[0]
    memory = f"{int(mem_kb) / 2**20:.0f} GiB" if mem_kb.isdigit() else "unknown"
    return {
        "cores": str(os.cpu_count()),
        "cpu": _first_line("/proc/cpuinfo", "model name"),
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis": redis_version,
        "rabbitmq": rabbitmq_version(),
    }


def versions(peers: bool) -> dict[str, str]:
    import redis

    import hubbub

    found = {"hubbub": f"{hubbub.__version__} (commit {git_commit()})",
             "redis-py (hubbub's side)": redis.__version__}
    if peers:
        code = ("import importlib.metadata as m, json; "
                f"print(json.dumps({{p: m.version(p) for p in {list(PEER_PACKAGES)!r}}}))")
        out = subprocess.run([str(PEERS_PYTHON), "-c", code], capture_output=True, text=True,
                             timeout=60, check=True, cwd="/")
        found.update({("redis-py (peers' side)" if k == "redis" else k): v
                      for k, v in json.loads(out.stdout).items()})
    return found


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=30).stdout.strip()

    dirty = " with uncommitted changes" if git("status", "--porcelain", "--", "hubbub",
                                                "bench") else ""
    return git("rev-parse", "--short", "HEAD") + dirty


# --- the page ------------------------------------------------------------------------------

def fmt(value: float) -> str:
    """Three significant figures or so: below 1 (latencies under a millisecond), two
    decimals, so that 0.26 and 0.34 ms do not both read 0.3."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}" if value >= 1 else f"{value:.2f}"


def render_table(table: Table, samples: Samples, failures: Failures, runs: int) -> str:
    """One Markdown table: each row's median, min-max, runs, and how many times better
    hubbub's median was (hubbub over it for rates, it over hubbub for latencies)."""
    better = "hubbub ÷ this" if table.higher_is_better else "this ÷ hubbub"
    lines = [f"| system | how | {table.unit} (median) | min-max | runs | {better} |",
             "|---|---|--:|--:|--:|--:|"]
    medians = {row.key: statistics.median(samples[(table.key, row.key)])
               for row in table.rows if samples.get((table.key, row.key))}
    for row in table.rows:
        got = samples.get((table.key, row.key), [])
        failed = len(failures.get((table.key, row.key), []))
        counted = f"{len(got)} of {runs}" if failed else str(len(got))
        if not got:
            reason = "failed" if failed else "not run"
            lines.append(f"| {row.system} | {row.how} | - | - | {counted} ({reason}) | |")
            continue
        ratio = ""
        if row.versus is not None and row.versus in medians:
            ours, theirs = medians[row.versus], medians[row.key]
            times = ours / theirs if table.higher_is_better else theirs / ours
            ratio = f"{times:.2f}x (vs {row.versus})"
        lines.append(f"| {row.system} | {row.how} | {fmt(medians[row.key])} | "
                     f"{fmt(min(got))}-{fmt(max(got))} | {counted} | {ratio} |")
    return "\n".join(lines)


def scaled(tables: Sequence[Table], n: int) -> str:
    """What the workload line says of the tables that send more than N."""
    bigger = [t for t in tables if t.scale > 1]
    if not bigger:
        return ""
    names = ", ".join(f"\"{t.title}\"" for t in bigger)
    return f" ({max(t.scale for t in bigger) * n:,} in {names}; RQ and arq drain {n:,})"


def render(*, tables: Sequence[Table], samples: Samples, failures: Failures, runs: int,
           n: int, command: str, machine: Mapping[str, str], versions: Mapping[str, str],
           started: str, ended: str, load: tuple[Sequence[float], Sequence[float]],
           quick: bool) -> str:
    """The whole of docs/benchmarks.md, from the measurements and the facts of the run."""
    kind = ("a smoke run (`--quick`): one run of few tasks, so the figures are rough"
            if quick else f"medians of {runs} runs")
    out = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/report.py: edit that script, not this page. -->",
        "",
        "hubbub against Celery, Dramatiq, Huey, Taskiq, arq and RQ, measured in the same run "
        "on the same machine and the same Redis. Every figure on this page was produced by "
        "the command below; the page is rewritten by it and holds nothing else. Most figures "
        "are rates in tasks per second (higher is better), and the last column, \"hubbub ÷ "
        "this\", is hubbub's median over the row's; latencies are in milliseconds (lower is "
        "better), and the column is the row's over hubbub's. Either way, above 1 hubbub did "
        "better than that row and below 1 it did worse.",
        "",
        "## This run",
        "",
        "```sh",
        command,
        "```",
        "",
        f"- **Workload**: {n:,} tasks per measurement{scaled(tables, n)}; {kind}."
        + (" Runs were taken in rounds (every row once, then again), so other work on the "
           "machine disturbed every system alike." if runs > 1 else ""),
        f"- **When**: {started} to {ended} (UTC); load average (1, 5, 15 min) "
        f"{' '.join(f'{x:.2f}' for x in load[0])} at the start, "
        f"{' '.join(f'{x:.2f}' for x in load[1])} at the end.",
        f"- **Machine**: {machine['cores']} cores ({machine['cpu']}), {machine['memory']}, "
        f"{machine['os']}, Python {machine['python']}, Redis {machine['redis']} on loopback "
        f"(RabbitMQ {machine['rabbitmq']}, not used by these measures).",
        "- **Versions**: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "- **Setup**: the peers run from their own venv, made by `bash bench/setup_peers.sh`. "
        "Each driver is in `bench/peers/` (`_driver.py` defines what is timed). Results are "
        "off on every side (no peer keeps them by default). Celery acks a task when a pool "
        "process receives it (its default), Huey and Taskiq's list broker take it off the "
        "queue when a worker takes it; hubbub, Dramatiq, arq and RQ keep it until it ran.",
        "",
        "A loaded or shared machine lowers every figure; the ratios between systems measured "
        "in turns say more than the absolute rates. Re-run the command before quoting a "
        "figure.",
    ]
    for table in tables:
        out += ["", f"## {table.title}", "", table.about, "",
                render_table(table, samples, failures, runs)]
        notes = [f"{row.system} ({row.key}): {reason}"
                 for row in table.rows for reason in failures.get((table.key, row.key), [])]
        if notes:
            out += ["", "Failed runs: " + "; ".join(sorted(set(notes))) + "."]
    out += [
        "",
        "## Other scripts",
        "",
        "Measures of hubbub alone, not run by this command; each prints its own figures.",
        "",
        "| script | measures |",
        "|---|---|",
        "| `python bench/throughput.py` | SQLite and memory enqueue and drain, pickup "
        "latency at 200 tasks/s |",
        "| `python bench/concurrency.py` | the pools on I/O-bound and CPU-bound tasks |",
        "| `python bench/delay_overhead.py` | what checking arguments costs `delay()` |",
        "| `python bench/extra_brokers.py` | RabbitMQ and Beanstalkd, with Celery on "
        "RabbitMQ |",
        "| `python bench/workflows.py` | groups, chords and chains against Celery's canvas |",
        "| `python bench/producers.py` | `delay()` one by one per broker, 32 threads on "
        "RabbitMQ |",
        "| `python bench/rate_pacing.py` | how evenly a fleet-wide rate limit spaces the "
        "starts tasks see |",
        "| `python bench/drain.py` | sync drains on the process and thread pools, CPU per "
        "task in the worker and its children, against an older tree (`--old`) |",
        "| `python bench/latency.py` | pickup latency on Redis and SQLite, and an idle "
        "worker's CPU |",
        "| `python bench/fanout.py` | 20,000 tasks that each wait 50 ms on `--pool async "
        "-c 1000`: span over the ideal, CPU per task, per event loop |",
        "| `python bench/memory.py` | an idle worker's memory per pool, against arq's, and "
        "where the difference comes from |",
        "| `python bench/async_producers.py` | `await task.delay_async()` from an event "
        "loop |",
        "| `python bench/scale.py`, `events.py`, `control_cost.py`, `limits.py`, "
        "`metrics_cost.py`, `types.py`, `dashboard_search.py` | what one feature costs |",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    # 500: RQ forks a process per job (about 100 a second here) and arq polls every 0.5 s,
    # so they drain N where the others drain 10 x N; a full report takes about 15 minutes
    # on a 2-core machine.
    parser.add_argument("--tasks", type=int, default=500, help="tasks per measurement")
    parser.add_argument("--quick", action="store_true", help="1 run of 200 tasks")
    parser.add_argument("--only", default="",
                        help="comma-separated table keys to run (default: all)")
    parser.add_argument("--no-peers", action="store_true", help="hubbub's rows only")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    runs, n = (1, 200) if args.quick else (args.runs, args.tasks)
    tables = [t for t in TABLES if not args.only or t.key in args.only.split(",")]
    peers = not args.no_peers
    if peers and not PEERS_PYTHON.exists():
        raise SystemExit("the peers are not installed: run bash bench/setup_peers.sh first")
    command = "python bench/report.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    load_start = os.getloadavg()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    facts = machine(args.redis_url)
    found = versions(peers)
    samples, failures = measure(tables, runs, n, args.redis_url, peers)
    page = render(tables=tables, samples=samples, failures=failures, runs=runs, n=n,
                  command=command, machine=facts, versions=found, started=started,
                  ended=dt.datetime.now(dt.UTC).strftime("%H:%M"),
                  load=(load_start, os.getloadavg()), quick=args.quick)
    args.out.write_text(page)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
