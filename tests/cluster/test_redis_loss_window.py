"""What asynchronous replication can lose, made to happen on purpose.

A master and its replica of the test's own (ports ``HB_TEST_REDIS_SENTINEL_PORT`` + 20
and + 21). The replica replicates through a proxy the test stalls (``link``); clients reach
the master through another proxy (``front``), which the test re-points at the replica when
it promotes it: the failover a Sentinel or a Cluster does, done by hand so that nothing
repairs the stalled link behind the test's back (a Sentinel re-points a replica whose
master address looks wrong). With the link stalled, tasks are published; the master is
SIGKILLed and the stalled bytes dropped, so the promoted replica never had them.

Without ``wait_replicas`` those publishes were confirmed and are lost: exactly them (the
ledger says which). With ``wait_replicas=1`` the same publishes are refused (WAIT finds no
replica acknowledging), so nothing confirmed is lost.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.brokers import redis as redis_module
from tests.brokers import unavailable
from tests.cluster import servers
from tests.faults import faultapp
from tests.faults.conftest import REPO, FaultReport, Site
from tests.faults.ledger import Ledger, wait_until
from tests.faults.proxy import Proxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@dataclass
class Pair:
    master: servers.Server
    replica: servers.Server
    link: Proxy  # replica -> master
    front: Proxy  # clients -> the master of the moment

    def linked(self, master: int) -> bool:
        return "state=online" in servers.info(master).get("slave0", "")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    base = servers.SENTINEL_PORT + 20
    host = servers.HOST
    with Proxy((host, base)) as link, Proxy((host, base)) as front:
        master = servers.Server(base, servers.redis_args(base), tmp_path / "m")
        replica = servers.Server(base + 1, servers.redis_args(
            base + 1, "--replicaof", host, str(link.port)), tmp_path / "r")
        p = Pair(master, replica, link, front)
        try:
            try:
                master.start()
                replica.start()
                servers.wait(lambda: p.linked(base), 30, "the replica in sync")
            except (servers.ServerError, OSError) as exc:
                unavailable(str(exc))
            yield p
        finally:
            master.kill()
            replica.kill()


def _confirmed(site: Site, key: str) -> bool:
    try:
        site.submit("faults.work", [key])
    except Exception:  # recorded as unconfirmed; the caller tries again
        return False
    return True


@pytest.mark.parametrize("wait_replicas", [0, 1], ids=["async_replication", "wait_replicas"])
def test_publishes_the_replica_never_got_are_lost_only_without_wait_replicas(
    pair: Pair, wait_replicas: int, tmp_path: Path, fault_report: FaultReport,
) -> None:
    prefix = "lw" + uuid.uuid4().hex[:8]
    url = (f"redis://{pair.front.address}/0?prefix={prefix}&wait_replicas={wait_replicas}"
           "&wait_timeout=0.3&socket_timeout=2")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    results = f"sqlite:///{tmp_path / 'results.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    pythonpath = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update({"HUBBUB_BROKER": url, "HUBBUB_RESULTS": results, "HUBBUB_LEASE": "2",
                "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1",
                faultapp.LEDGER_ENV: str(ledger)})
    site = Site("redis", redis_module, url, results, tmp_path, ledger, env)
    try:
        for i in range(20):  # replicated
            wait_until(lambda i=i: _confirmed(site, f"before{i}"), 30, f"before{i} confirmed")
        # Replicated for sure before the link stalls: without wait_replicas nothing above
        # waited for the replica, and on a loaded machine its copy could lag past the stall
        # (these then counted as lost in a CI run).
        acked = servers.cli(pair.master.port, "WAIT", "1", "10000", timeout=15).strip()
        assert acked == "1", f"the replica did not acknowledge the first writes ({acked!r})"
        pair.link.stall()
        window = [f"window{i}" for i in range(10)]
        for key in window:
            _confirmed(site, key)  # once: confirmed or refused, as the ledger records
        ledger.fault("SIGKILL master with the replica's link stalled")
        pair.master.kill()
        pair.link.cut()  # the bytes the master sent and the proxy held never arrive
        servers.cli(pair.replica.port, "REPLICAOF", "NO", "ONE")  # the failover
        pair.front.cut()
        pair.front.upstream = (servers.HOST, pair.replica.port)
        pair.front.restore()
        pair.master.args = servers.redis_args(pair.master.port, "--replicaof", servers.HOST,
                                              str(pair.replica.port))
        servers.wait(lambda: not servers.listening(pair.master.port), 10, "port free")
        pair.master.start()  # back, as a replica of the promoted one
        servers.wait(lambda: pair.linked(pair.replica.port), 30, "the old master in sync")
        for i in range(20):  # a WAIT on a loaded machine may time out: send again until kept
            wait_until(lambda i=i: _confirmed(site, f"after{i}"), 30, f"after{i} confirmed")
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
