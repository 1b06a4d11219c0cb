"""What asynchronous replication can lose, made to happen: the replica's link to the master
runs through a proxy the test stalls, tasks are published, the master is SIGKILLed and the
stalled bytes are dropped, so the promoted replica never had them.

Without ``wait_replicas`` those publishes were confirmed and are lost: exactly them, and
nothing else (the ledger says which). With ``wait_replicas=1`` the same publishes are
refused (WAIT finds no replica acknowledging), so nothing confirmed is lost. A Sentinel
setup of the test's own (ports ``HUBBUB_TEST_REDIS_SENTINEL_PORT`` + 20 ..) so that the
session's stays whole.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import redis_sentinel
from tests.cluster import servers
from tests.faults import faultapp
from tests.faults.conftest import REPO, FaultReport, Site
from tests.faults.ledger import Ledger, wait_until
from tests.faults.proxy import Proxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def stalled_topology(tmp_path: Path) -> Iterator[tuple[servers.RedisSentinel, Proxy]]:
    base = servers.SENTINEL_PORT + 20
    with Proxy((servers.HOST, base)) as proxy:
        topology = servers.RedisSentinel(tmp_path / "redis", base=base,
                                         replica_upstream=proxy.port)
        try:
            try:
                topology.start()
            except servers.ServerError as exc:
                if os.environ.get("CI") == "true":
                    pytest.fail(f"{exc} (CI=true: a broker suite must not skip)")
                pytest.skip(str(exc))
            yield topology, proxy
        finally:
            topology.stop()


@pytest.mark.parametrize("wait_replicas", [0, 1], ids=["async_replication", "wait_replicas"])
def test_publishes_the_replica_never_got_are_lost_only_without_wait_replicas(
    stalled_topology: tuple[servers.RedisSentinel, Proxy], wait_replicas: int, tmp_path: Path,
    fault_report: FaultReport,
) -> None:
    topology, proxy = stalled_topology
    prefix = "lw" + uuid.uuid4().hex[:8]
    url = topology.url(prefix, wait_replicas=str(wait_replicas), wait_timeout="0.3",
                       socket_timeout="2")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    results = f"sqlite:///{tmp_path / 'results.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    pythonpath = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update({"HUBBUB_BROKER": url, "HUBBUB_RESULTS": results, "HUBBUB_LEASE": "2",
                "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1",
                faultapp.LEDGER_ENV: str(ledger)})
    site = Site("redis_sentinel", redis_sentinel, url, results, tmp_path, ledger, env)
    try:
        site.submit("faults.work", [f"before{i}" for i in range(20)])  # replicated
        proxy.stall()
        window = [f"window{i}" for i in range(10)]
        for key in window:
            try:
                site.submit("faults.work", [key])
            except Exception:  # refused: recorded as unconfirmed by submit
                continue
        master = topology.master()
        ledger.fault("SIGKILL master with the replica's link stalled")
        topology.server(master).kill()
        proxy.cut()  # the bytes the master sent and the proxy held never arrive
        wait_until(lambda: topology.master() != master, 60, "the replica promoted")
        topology.restart(master)  # the sentinels make it a replica of the new master
        servers.wait(topology.healthy, 60, "the old master back as a replica")
        site.submit("faults.work", [f"after{i}" for i in range(20)])
        site.start_online("--pool", "threads", "-c", "4")
        wait_until(site.idle, 60, "the queue drained")
        site.finish(timeout=30)
        report = ledger.check()
        fault_report(site, report, f"wait_replicas={wait_replicas}: {len(report.lost)} "
                     f"lost, {len(report.unconfirmed)} refused")
        assert not report.unexpected
        confirmed_in_window = {k for k in window if k in report.submitted}
        if wait_replicas:
            assert not report.lost
            assert not confirmed_in_window, "a publish no replica had was confirmed"
        else:
            assert confirmed_in_window == set(window)  # nothing waited: all confirmed
            assert report.lost == set(window), report.lost  # exactly the unreplicated ones
        assert {f"before{i}" for i in range(20)} | {f"after{i}" for i in range(20)} <= (
            report.completed)
    finally:
        site.close()
