"""Fault scenarios on real worker processes, judged by a ledger hubbub does not write.

Each scenario runs on every transport that crosses processes (sqlite, redis, amqp,
beanstalk), injects one fault (kill -9, SIGTERM, an unreachable server, a task that kills its
process), and checks what the guarantees in docs/reliability.md promise: nothing confirmed is
lost, duplicates only where at-least-once allows them, and bounded recovery. Every wait is on
the ledger, a pid or broker stats, with a deadline; every process started is killed in teardown.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import FaultReport, Site, transports
from tests.faults.ledger import wait_until

LEASE = 2.0  # --lease for the kill scenarios; renewal runs every LEASE / 3


def keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def drained(site: Site) -> bool:
    s = site.stats()
    return s.ready == 0 and s.delayed == 0 and s.leased == 0


# -- kill -9 of the worker mid-stream -------------------------------------------------------


@pytest.mark.parametrize("site", transports(), indirect=True)
def test_kill_9_mid_stream_loses_nothing(site: Site, fault_report: FaultReport) -> None:
    n, concurrency, prefetch = 2000, 300, 16
    args = ("--pool", "async", "-c", str(concurrency), "--prefetch", str(prefetch),
            "--lease", str(LEASE))
    first = site.start_worker(*args)
    site.submit("faults.awork", keys("k", n), seconds=0.2)
    led = site.ledger

    def busy() -> bool:
        rep = led.check()
        return len(rep.completed) >= 400 and sum(rep.runs.values()) - len(rep.completed) >= 200

    wait_until(busy, 30, "400 done and 200 in flight on the first worker")
    killed_at = site.kill(first)
    first.proc.wait(10)
    site.start_worker(*args)
    wait_until(lambda: len(led.distinct("done")) == n, 40, f"all {n} keys done")
    wait_until(lambda: drained(site), 20, "every message acked")
    rep = led.check()
    in_flight = rep.in_flight_at(killed_at, first.pid)
    ran_on_dead = rep.started_by(first.pid, before=killed_at)
    rerun = {k for k, runs in rep.runs.items() if runs > 1}
    back = [min(e.mono for e in rep.of("start", k) if e.mono > killed_at) - killed_at
            for k in in_flight]
    assert rep.lost == set()
    assert rep.unexpected == set()
    assert in_flight, "the kill hit no task in flight"
    assert in_flight <= rerun  # every interrupted task ran again...
    assert rerun <= ran_on_dead  # ...and only tasks the dead worker had started
    # Done twice: finished on the dead worker but not yet acked when it died. Never more
    # than the worker could hold (its slots plus prefetch).
    assert set(rep.duplicated) <= ran_on_dead
    assert len(rerun) <= concurrency + prefetch
    assert max(back) <= LEASE + LEASE / 3 + 1.5, f"in-flight work back after {max(back):.2f}s"
    fault_report(site, rep, f"{len(in_flight)} in flight at kill, all back within "
                            f"{max(back):.2f}s; {len(rerun)} ran twice")
