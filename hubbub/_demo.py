"""``hubbub demo``: a worker on the embedded broker, a mix of tasks, a live report."""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hubbub.results.base import READY_STATES, ResultRecord, State
from hubbub.task import SendOptions, build_envelope

BATCH = 250


def run_demo(console: Console, *, count: int, pool: str, concurrency: int | None,
             db: str | None) -> int:
    """Run the demo; returns the process exit status (0 when everything behaved)."""
    folder = None if db else tempfile.TemporaryDirectory(prefix="hubbub-demo-")
    path = Path(db) if db else Path(folder.name) / "demo.db"  # type: ignore[union-attr]
    url = f"sqlite:///{path.resolve()}"
    os.environ["HUBBUB_BROKER"] = url
    from hubbub import _demo_tasks as demo

    console.print(f"[bold]hubbub demo[/bold]: broker [cyan]{url}[/cyan], pool {pool}")
    command = [sys.executable, "-m", "hubbub", "worker", "-A", "hubbub._demo_tasks:hub",
               "--pool", pool, "--loglevel", "warning", "--grace", "10"]
    if concurrency:
        command += ["-c", str(concurrency)]
    log_file = path.with_suffix(".worker.log")
    with open(log_file, "w") as log:
        worker = subprocess.Popen(command, stdout=log, stderr=log, env=os.environ.copy())
    try:
        plan = _plan(count)
        sent: dict[str, str] = {}
        delayed: set[str] = set()
        with _progress(console) as progress:
            sending = progress.add_task("sending", total=count)
            for start in range(0, count, BATCH):
                envelopes = []
                for kind, call, countdown in plan[start : start + BATCH]:
                    spec = getattr(demo, kind).spec
                    envelope = build_envelope(spec, demo.hub.settings.default_queue, call, {},
                                              SendOptions(countdown=countdown))
                    envelopes.append(envelope)
                    sent[envelope.id] = kind
                    if countdown:
                        delayed.add(envelope.id)
                demo.hub.publish(envelopes)  # one broker round trip per batch
                progress.update(sending, completed=min(count, start + BATCH))
            running = progress.add_task("running", total=count)
            records = _watch(demo.hub, list(sent), progress, running, worker)
        return _report(console, demo.hub, sent, delayed, records, worker, log_file)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        demo.hub.close()
        if folder is not None:
            folder.cleanup()


def _plan(count: int) -> list[tuple[str, tuple[Any, ...], float | None]]:
    rng = random.Random(7)
    plan: list[tuple[str, tuple[Any, ...], float | None]] = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.02:
            plan.append(("broken", (i,), None))
        elif roll < 0.07:
            plan.append(("flaky", (i,), None))
        elif roll < 0.12:
            plan.append(("fetch", (20,), rng.uniform(1.0, 3.0)))  # delayed in the broker
        elif roll < 0.32:
            plan.append(("crunch", (20_000,), None))
        else:
            plan.append(("fetch", (rng.randint(5, 50),), None))
    return plan


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


def _watch(hub: Any, ids: list[str], progress: Progress, bar: Any,
           worker: subprocess.Popen[bytes]) -> dict[str, ResultRecord]:
    done: dict[str, ResultRecord] = {}
    deadline = time.monotonic() + 120
    while len(done) < len(ids):
        if worker.poll() is not None:
            raise SystemExit(f"the demo worker exited early with status {worker.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit("the demo did not finish within 120 s")
        waiting = [i for i in ids if i not in done]
        found = hub.bridge.run(hub.read_results(waiting))
        done.update({i: r for i, r in found.items() if r.state in READY_STATES})
        progress.update(bar, completed=len(done))
        time.sleep(0.2)
    return done


def _report(console: Console, hub: Any, sent: dict[str, str], delayed: set[str],
            records: dict[str, ResultRecord], worker: subprocess.Popen[bytes],
            log_file: Path) -> int:
    async def dead_count() -> int:
        client = await hub.client()
        return sum(s.dead for s in await client.transport.stats(None))

    dead = hub.bridge.run(dead_count())
    succeeded = [r for r in records.values() if r.state == State.SUCCESS]
    failed = [r for r in records.values() if r.state == State.FAILURE]
    retried = [r for r in records.values() if r.retries > 0]
    prompt = [r for r in records.values() if r.id not in delayed]
    starts = [r.started_at for r in prompt if r.started_at]
    ends = [r.finished_at for r in prompt if r.finished_at]
    waits = sorted((r.started_at - r.created_at) * 1000 for r in records.values()
                   if r.started_at and r.created_at and r.id not in delayed)
    span = max(ends) - min(starts) if starts and ends else 0.0
    worker.send_signal(signal.SIGTERM)
    status = worker.wait(30)

    table = Table(title="hubbub demo: summary")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("tasks sent", str(len(sent)))
    table.add_row("done (SUCCESS)", str(len(succeeded)))
    table.add_row("retried at least once", str(len(retried)))
    table.add_row("failed (FAILURE)", str(len(failed)))
    table.add_row("dead-lettered (could not run)", str(dead))
    table.add_row("delayed in the broker", str(len(delayed)))
    table.add_row("throughput (not delayed)", f"{len(prompt) / span:,.0f} tasks/s" if span else "-")
    if waits:
        table.add_row("wait p50 (sent → started)", f"{statistics.median(waits):.1f} ms")
        table.add_row("wait p99", f"{waits[int(len(waits) * 0.99) - 1]:.1f} ms")
    table.add_row("worker exit status", str(status))
    console.print(table)
    expected_broken = sum(1 for kind in sent.values() if kind == "broken")
    # Failed tasks ran: they are FAILURE results; nothing in the demo is unrunnable.
    ok = status == 0 and len(failed) == expected_broken and dead == 0
    if not ok:
        console.print(f"[red]something went wrong; see the worker log {log_file}[/red]")
    return 0 if ok else 1
