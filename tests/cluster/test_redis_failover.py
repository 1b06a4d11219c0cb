"""A Redis master dies under load: its replica is promoted, workers and producers carry on.

On the session's Redis Cluster (the master of the queue's slot) and on its Sentinel setup
(the one master): real worker processes drain a stream of tasks a producer keeps sending,
the test SIGKILLs the master, waits for the promotion, and starts the killed node again
(it rejoins as a replica on its own). The fault ledger judges what happened:

- ``?wait_replicas=1``: nothing a publish confirmed is lost (publish and ack return only
  once a replica has them; while no replica is there, publishes fail and are not counted).
- without it: what is lost is only what was confirmed in the moment before the kill, the
  asynchronous replication window; the test measures it and bounds it.

Duplicates are allowed only for what was in flight around the failover (at-least-once).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import brokers
from tests.cluster import servers
from tests.faults import faultapp
from tests.faults.conftest import REPO, FaultReport, Site
from tests.faults.ledger import Ledger, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LEASE = 2.0  # seconds: a lease the dead master took with it comes back soon
WINDOW = 1.0  # seconds before the kill in which an unreplicated publish may be lost


class Producer:
    """Publishes one key after another from a thread until stopped; a failed publish is
    recorded as unconfirmed by ``Site.submit`` and the producer goes on."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.confirmed = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                self.site.submit("faults.work", [f"k{n}"])
            except Exception:  # judged by the ledger: the key is marked unconfirmed
                self.failed += 1
                self._stop.wait(0.05)
            else:
                self.confirmed += 1


@pytest.fixture(params=["redis_cluster", "redis_sentinel"])
def topology(request: pytest.FixtureRequest) -> Iterator[Any]:
    module = brokers.load(request.param)
    brokers.require(module)  # starts the servers; skips locally, fails under CI=true
    t = servers.redis_cluster() if request.param == "redis_cluster" else servers.redis_sentinel()
    try:
        yield t
    finally:  # leave the session's topology whole for the next test
        for s in t.servers:
            if not s.alive():
                t.restart(s.port)
        servers.wait(t.healthy, 60, f"{request.param} healthy again")


@pytest.mark.parametrize("wait_replicas", [1, 0], ids=["wait_replicas", "async_replication"])
def test_a_killed_master_fails_over_and_the_ledger_says_what_was_kept(
    topology: Any, wait_replicas: int, tmp_path: Path, fault_report: FaultReport,
    request: pytest.FixtureRequest,
) -> None:
    prefix = "fo" + uuid.uuid4().hex[:8]
    options = {"wait_replicas": str(wait_replicas), "wait_timeout": "1", "socket_timeout": "2"}
    url = topology.url(prefix, **options)
    name = request.node.callspec.params["topology"]
    module = brokers.load(name)
    site = Site(name, module, url, f"sqlite:///{tmp_path / 'results.db'}", tmp_path,
                Ledger(tmp_path / "ledger.jsonl"))
    site.env = _env(site)
    try:
        site.start_online("--pool", "threads", "-c", "4")
        master = topology.master_of(f"{{{prefix}:default}}")
        assert master is not None
        with Producer(site) as producer:
            wait_until(lambda: site.ledger.count("done") >= 50, 30, "50 tasks done")
            fault = site.ledger.fault("SIGKILL master")
            topology.server(master).kill()
            wait_until(lambda: topology.master_of(f"{{{prefix}:default}}") not in (None, master),
                       30,
                       "a replica promoted")
            promoted = site.ledger.write("promoted", str(master))
            restarted = site.ledger.write("restarting", str(master))
            topology.restart(master)  # rejoins as a replica of the promoted one
            servers.wait(topology.healthy, 60, "the killed node back as a replica")
            rejoined = site.ledger.write("rejoined", str(master))
            done = site.ledger.count("done")
            wait_until(lambda: site.ledger.count("done") >= done + 50, 60,
                       "50 more tasks done after the failover")
        wait_until(site.idle, 60, "the queue drained")
        site.finish(timeout=30)
        report = site.ledger.check()
        fault_report(site, report, f"{name} wait_replicas={wait_replicas}, "
                     f"{len(report.unconfirmed)} publishes refused")
        assert not report.unexpected
        confirmed_at = {e.key: e.mono for e in report.of("submit")}
        if wait_replicas:
            assert not report.lost, f"confirmed with wait_replicas, lost: {report.lost}"
        else:
            # Lost only what a replica may never have had: publishes confirmed in the
            # replication window before the kill, or by the restarted node while it still
            # took writes as an empty master, before Sentinel made it a replica (Redis's own
            # split-brain window with asynchronous replication; wait_replicas closes both).
            outside = {k: (round(confirmed_at[k] - fault, 3)) for k in report.lost
                       if not (fault - WINDOW <= confirmed_at[k] <= fault
                               or restarted <= confirmed_at[k] <= rejoined)}
            assert not outside, (
                f"lost outside both windows (s after the kill): {sorted(outside.items())[:20]}; "
                f"restart at +{restarted - fault:.3f}s, rejoined at +{rejoined - fault:.3f}s")
        first_start = {k: report.first("start", k) for k in report.duplicated}
        late = {k for k, e in first_start.items() if e is None or e.mono > promoted + LEASE}
        assert not late, f"ran twice though started after the failover: {late}"
        assert producer.confirmed > 100
    finally:
        site.close()


def _env(site: Site) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    pythonpath = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update({"HUBBUB_BROKER": site.url, "HUBBUB_RESULTS": site.results,
                "HUBBUB_LEASE": str(LEASE), "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1",
                faultapp.LEDGER_ENV: str(site.ledger)})
    return env
