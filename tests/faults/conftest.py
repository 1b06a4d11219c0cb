"""The fault harness: one broker namespace, one ledger and real worker processes per test.

``site`` is parametrized (indirectly) over the transports that can cross processes; each test
starts ``python -m hubbub worker -A tests.faults.faultapp:hub`` subprocesses through it, and
every process it started is killed in teardown, even when the test failed. ``fault_report``
collects one row per scenario and transport; the table is printed at the end of the run
(by tests/conftest.py, which gathers the rows from xdist workers too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hubbub import Hub
from hubbub.transports.base import QueueStats
from tests import brokers
from tests.faults import faultapp
from tests.faults.ledger import Ledger, Report, wait_until

REPO = Path(__file__).resolve().parents[2]
APP = "tests.faults.faultapp:hub"
TRANSPORTS = ["sqlite", "redis", "amqp", "beanstalk"]  # memory cannot cross processes


def transports(*, slow: Sequence[str] = (), only: Sequence[str] | None = None,
               bugs: Mapping[str, str] | None = None,
               racy_bugs: Mapping[str, str] | None = None) -> list[Any]:
    """Params for ``site``: each transport whose code exists; ``slow`` ones marked slow,
    ``bugs`` ones (name -> the bug) marked as strict expected failures, ``racy_bugs`` ones
    as non-strict ones (a race: the scenario fails in some runs only)."""
    names = [n for n in TRANSPORTS if (only is None or n in only) and brokers.available(n)]
    bugs, racy = bugs or {}, racy_bugs or {}
    return [pytest.param(n, id=n, marks=[
        *([pytest.mark.slow] if n in slow else []),
        *([pytest.mark.xfail(strict=True, reason="bug: " + bugs[n])] if n in bugs else []),
        *([pytest.mark.xfail(strict=False, reason="bug: " + racy[n])] if n in racy else []),
    ]) for n in names]


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Site:
    """One test's broker namespace, result store, ledger and worker processes."""

    name: str
    module: ModuleType
    url: str
    results: str
    folder: Path
    ledger: Ledger
    env: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    _hub: Hub | None = None

    # -- workers ---------------------------------------------------------------------------

    def start_worker(self, *args: str, env: dict[str, str] | None = None) -> Worker:
        log = self.folder / f"worker-{len(self.workers)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hubbub", "worker", "-A", APP, *args],
                cwd=self.folder, env={**self.env, **(env or {})}, stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(proc, log)
        self.workers.append(worker)
        return worker

    def wait_online(self, worker: Worker, timeout: float = 20.0) -> float:
        def online() -> bool:
            if not worker.alive():
                raise AssertionError(f"worker exited with {worker.proc.returncode}:\n"
                                     + worker.text())
            return " online: broker " in worker.text()

        return wait_until(online, timeout, "worker online")

    def start_online(self, *args: str, env: dict[str, str] | None = None) -> Worker:
        worker = self.start_worker(*args, env=env)
        self.wait_online(worker)
        return worker

    def kill(self, worker: Worker | int, sig: int = signal.SIGKILL, fault: str | None = None
             ) -> float:
        """Send ``sig`` to a process this test started (a worker, or a child of one of them);
        marks the fault in the ledger first and returns that instant."""
        pid = worker if isinstance(worker, int) else worker.pid
        at = self.ledger.fault(fault or signal.Signals(sig).name)
        os.kill(pid, sig)
        return at

    def finish(self, timeout: float = 30.0) -> None:
        """Stop every live worker gracefully, then check that nothing is left unacked.

        Stopping first makes the check hold on every transport: RabbitMQ reports no unacked
        count (``leased`` is only the asking connection's), but a stopped worker's unacked
        deliveries are back in ``ready``.
        """
        live = [w for w in self.workers if w.alive()]
        for worker in live:
            worker.proc.send_signal(signal.SIGTERM)
        for worker in live:
            assert worker.proc.wait(timeout) == 0, worker.text()[-2000:]
        wait_until(self.idle, 10, "nothing ready, delayed or leased once the workers stopped")

    def idle(self) -> bool:
        s = self.stats()
        return s.ready == 0 and s.delayed == 0 and s.leased == 0

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.alive():
                worker.proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(10)

    # -- producer --------------------------------------------------------------------------

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            self._hub = faultapp.build(self.url, results=self.results)
        return self._hub

    def submit(self, task: str, keys: Sequence[str], seconds: float = 0.0,
               eta: Sequence[float] | None = None, chunk: int = 1000) -> list[str]:
        """Publish ``task(key, seconds)`` for every key and record it in the ledger (confirmed
        or not); ``eta`` is epoch seconds per key. Returns the task ids."""
        t = self.hub.tasks[task]
        ids: list[str] = []
        if eta is not None:
            for key, at in zip(keys, eta, strict=True):
                try:
                    r = t.apply_async((key, seconds), eta=datetime.fromtimestamp(at, UTC))
                except Exception:
                    self.ledger.submitted([key], etas=[at], confirmed=False)
                    raise
                self.ledger.submitted([key], [r.id], [at])
                ids.append(r.id)
            return ids
        for start in range(0, len(keys), chunk):
            part = list(keys[start:start + chunk])
            try:
                results = t.delay_many([(k, seconds) for k in part])
            except Exception:
                self.ledger.submitted(part, confirmed=False)
                raise
            self.ledger.submitted(part, [r.id for r in results])
            ids.extend(r.id for r in results)
        return ids

    def stats(self, queue: str = "default") -> QueueStats:
        async def read() -> QueueStats:
            client = await self.hub.client()
            [s] = await client.transport.stats([queue])
            return s

        return self.hub.bridge.run(read())

    def records(self, ids: Sequence[str]) -> dict[str, Any]:
        return self.hub.bridge.run(self.hub.read_results(list(ids)))

    def dead_letters(self) -> list[Any]:
        async def read() -> list[Any]:
            client = await self.hub.client()
            return await client.transport.list_dead("default")

        return self.hub.bridge.run(read())

    def close(self) -> None:
        self.stop_all()
        if self._hub is not None:
            self._hub.close()
        self.ledger.close()
        asyncio.run(self.module.cleanup(self.url))


@pytest.fixture
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    module = brokers.load(request.param)
    brokers.require(module)  # skips locally, fails under CI=true
    run_id = "f" + uuid.uuid4().hex[:10]
    url = module.make_url(tmp_path, run_id)
    results = module.results_url(tmp_path, run_id) or f"sqlite:///{tmp_path / 'results.db'}"
    ledger = Ledger(tmp_path / "ledger.jsonl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    pythonpath = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update({"HUBBUB_BROKER": url, "HUBBUB_RESULTS": results, "PYTHONPATH": pythonpath,
                "PYTHONUNBUFFERED": "1", faultapp.LEDGER_ENV: str(ledger)})
    s = Site(request.param, module, url, results, tmp_path, ledger, env)
    try:
        yield s
    finally:
        s.close()


# -- the summary table ---------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    transport: str
    submitted: int
    completed: int
    lost: int
    duplicated: int
    recovery: float | None
    note: str = ""
    dead: int = 0


ROWS = pytest.StashKey[list[Row]]()


@pytest.fixture(scope="session")
def fault_rows(pytestconfig: pytest.Config) -> list[Row]:
    return pytestconfig.stash.setdefault(ROWS, [])


class FaultReport:
    def __init__(self, rows: list[Row], scenario: str) -> None:
        self.rows, self.scenario = rows, scenario

    def __call__(self, site: Site, report: Report, note: str = "",
                 recovery: float | None = None) -> None:
        self.rows.append(Row(self.scenario, site.name, len(report.submitted),
                             len(report.completed), len(report.lost), len(report.duplicated),
                             report.recovery if recovery is None else recovery, note,
                             len(report.dead)))


@pytest.fixture
def fault_report(fault_rows: list[Row], request: pytest.FixtureRequest) -> FaultReport:
    """``fault_report(site, ledger_report, note)`` adds this scenario's row to the table."""
    scenario = request.node.originalname.removeprefix("test_")
    return FaultReport(fault_rows, scenario)


def write_table(terminalreporter: Any, rows: list[Row]) -> None:
    """Print the ledger table (tests/conftest.py calls this once per run, also under xdist,
    where the workers' rows reach the controller through ``workeroutput``)."""
    if not rows:
        return
    header = ("scenario", "transport", "submitted", "completed", "lost", "duplicated",
              "dead", "recovery s", "notes")
    table = [header] + [
        (r.scenario, r.transport, str(r.submitted), str(r.completed), str(r.lost),
         str(r.duplicated), str(r.dead), "-" if r.recovery is None else f"{r.recovery:.2f}",
         r.note)
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    terminalreporter.section("fault scenarios (ledger)")
    for line in table:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                 enumerate(zip(line[:-1], widths, strict=True))]
        terminalreporter.write_line("  ".join([*cells, line[-1]]).rstrip())
    out = os.environ.get("FAULTS_REPORT_JSON")
    if out:
        Path(out).write_text(json.dumps([r.__dict__ for r in rows], indent=1))

