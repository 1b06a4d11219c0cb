"""A chord of 1,000 header tasks survives kill -9 of a worker half-way, judged by the ledger:
every header task runs, and the body runs exactly once with all 1,000 values in order.

Workers load this module as their app (``-A tests.faults.test_chord_kill:hub``): ``hub`` is
built on first access from ``$HUBBUB_BROKER``/``$HUBBUB_RESULTS``, as in ``faultapp``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest

from hubbub import Hub, chord
from tests.faults.conftest import FaultReport, Site, Worker, transports
from tests.faults.faultapp import LEDGER_ENV
from tests.faults.ledger import record, wait_until

APP = "tests.faults.test_chord_kill:hub"
N = 1000
LEASE = 2.0


def header(key: str) -> str:
    record(os.environ[LEDGER_ENV], "start", key)
    time.sleep(0.005)  # long enough for the kill to land with work in flight
    record(os.environ[LEDGER_ENV], "done", key)
    return key


def body(values: list[str]) -> int:
    ordered = values == [f"h{i}" for i in range(N)]
    record(os.environ[LEDGER_ENV], "start", "body")
    record(os.environ[LEDGER_ENV], "done", "body", n=len(values), ordered=ordered)
    return len(values)


def build(broker: str | None = None, **options: Any) -> Hub:
    hub = Hub(broker, **options)
    hub.task(name="chords.header")(header)
    hub.task(name="chords.body")(body)
    return hub


_hub: Hub | None = None


def __getattr__(name: str) -> Any:
    global _hub
    if name == "hub":
        if _hub is None:
            _hub = build()
        return _hub
    raise AttributeError(name)


def start(site: Site, *args: str) -> Worker:
    """A worker of this module's app, owned by ``site`` (killed in its teardown)."""
    log = site.folder / f"chord-worker-{len(site.workers)}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hubbub", "worker", "-A", APP, *args],
                                cwd=site.folder, env=site.env, stdout=out,
                                stderr=subprocess.STDOUT)
    worker = Worker(proc, log)
    site.workers.append(worker)
    return worker


@pytest.mark.parametrize("site", transports(), indirect=True)
def test_kill_9_half_way_through_a_chord_runs_its_body_once_with_every_value(
        site: Site, fault_report: FaultReport) -> None:
    args = ("--pool", "threads", "-c", "8", "--prefetch", "8", "--lease", str(LEASE))
    victim, survivor = start(site, *args), start(site, *args)
    for worker in (victim, survivor):
        site.wait_online(worker)
    producer = build(site.url, results=site.results)
    try:
        keys = [f"h{i}" for i in range(N)]
        result = chord([producer.tasks["chords.header"].s(k) for k in keys],
                       producer.tasks["chords.body"].s()).delay()
        site.ledger.submitted([*keys, "body"])
        led = site.ledger

        def half_way() -> bool:
            rep = led.check()
            return len(rep.completed) >= N // 2 and bool(rep.unfinished_by(victim.pid))

        wait_until(half_way, 30, "half the header done, the victim busy")
        site.kill(victim)
        victim.proc.wait(10)
        wait_until(lambda: led.count("done", "body") >= 1, 40, "the chord's body ran")
        assert result.get(timeout=10) == N
        site.finish()  # every message acked; a second body would have run by now
        rep = led.check()
        [run] = rep.of("done", "body")
        assert rep.lost == set()
        assert rep.runs["body"] == 1, "the body ran more than once"
        assert (run.extra["n"], run.extra["ordered"]) == (N, True)
        rerun = {k for k, n in rep.runs.items() if n > 1}
        fault_report(site, rep, f"body once with {N} values in order; {len(rerun)} header "
                                "tasks ran again after the kill")
    finally:
        producer.close()
