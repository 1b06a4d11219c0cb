"""A broker that goes away and comes back: real CLI workers resume consuming, and nothing a
publish confirmed is lost.

RabbitMQ is the shared server, never restarted: the transports reach it through a proxy the
test owns (``tests.faults.proxy``), and the outage is ``cut()`` then ``restore()``. Redis and
Beanstalkd are servers the test starts on a free port with an append-only file / a binlog,
SIGKILLs and starts again on the same port. Every wait polls the ledger, a log or a process
with a deadline; every process the test started is killed in teardown, even when it fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest

from hubbub import Hub, State
from hubbub.errors import TransportError, TransportUnavailable
from hubbub.transports import Outgoing, open_transport
from tests import brokers
from tests.brokers.beanstalk import OwnServer
from tests.faults.proxy import Proxy

APP = textwrap.dedent('''
    import os
    from hubbub import Hub

    hub = Hub()  # $HUBBUB_BROKER and $HUBBUB_RESULTS, set by the test

    @hub.task(name="outage.record")
    def record(ledger: str, key: str) -> str:
        with open(ledger, "a") as f:  # one short O_APPEND write per line: never interleaved
            f.write(f"{key} {os.getpid()}\\n")
        return key
''')


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.02)  # polling a condition with a deadline, not timing


class Outage(Protocol):
    """A broker the test can take away (``cut``), silence (``stall``) and bring back
    (``restore``)."""

    url: str

    def cut(self) -> None: ...

    def stall(self) -> None: ...

    def restore(self) -> None: ...


class RabbitThroughProxy:
    def __init__(self, proxy: Proxy, prefix: str) -> None:
        self.proxy = proxy
        self.url = f"amqp://guest:guest@{proxy.address}/?prefix={prefix}&connect_timeout=2"

    def cut(self) -> None:
        self.proxy.cut()

    def stall(self) -> None:
        self.proxy.stall()

    def restore(self) -> None:
        self.proxy.restore()


class OwnBeanstalkd:
    def __init__(self, server: OwnServer, prefix: str) -> None:
        self.server = server
        self.url = server.url(prefix)

        self.stopped = False

    def cut(self) -> None:
        self.server.kill()  # SIGKILL: no goodbye to any client

    def stall(self) -> None:
        assert self.server.proc is not None
        self.server.proc.send_signal(signal.SIGSTOP)  # the server this test started
        self.stopped = True

    def restore(self) -> None:
        if self.stopped:
            assert self.server.proc is not None
            self.server.proc.send_signal(signal.SIGCONT)
            self.stopped = False
        else:
            self.server.start()  # same port, same binlog: its jobs are back


class OwnRedis:
    """A redis-server this test starts on a free port, with an append-only file fsynced on
    every write, so that whatever Redis confirmed survives a SIGKILL and a restart."""

    def __init__(self, folder: Path, prefix: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            brokers.unavailable("redis-server is not installed")
        self.port = brokers.free_port()
        self.cmd = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
                    str(folder), "--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        self.url = f"redis://127.0.0.1:{self.port}/0?prefix={prefix}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: brokers.reachable("127.0.0.1", self.port, timeout=0.2), 10,
                 "redis-server listening")

    def cut(self) -> None:
        self.kill()  # SIGKILL: no goodbye to any client

    def stall(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)  # the server this test started
        self.stopped = True

    def restore(self) -> None:
        if self.stopped:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)
            self.stopped = False
        else:
            self.start()  # same port, same append-only file: what it confirmed is back

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None


@pytest.fixture(params=["redis", "amqp", "beanstalk"])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    module = brokers.load(request.param)
    brokers.require(module)  # skips locally, fails under CI=true
    prefix = "out" + uuid.uuid4().hex[:10]
    if request.param == "redis":
        data = tmp_path / "redis-data"
        data.mkdir()
        own = OwnRedis(data, prefix)
        try:
            own.start()
            yield own
        finally:
            own.kill()  # SIGKILL ends it even when stopped
    elif request.param == "amqp":
        direct = module.make_url(tmp_path, prefix)
        with Proxy(module.server()) as proxy:
            try:
                yield RabbitThroughProxy(proxy, prefix)
            finally:
                proxy.cut()
                asyncio.run(module.cleanup(direct))
    else:
        binlog = tmp_path / "binlog"
        binlog.mkdir()
        server = OwnServer("-b", str(binlog))
        try:
            server.start()
            yield OwnBeanstalkd(server, prefix)
        finally:
            server.kill()  # SIGKILL ends it even when stopped


@dataclass
class Site:
    """The scratch app, its ledger, the producer hub and the worker processes of one test."""

    folder: Path
    env: dict[str, str]
    hub: Hub
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ledger(self) -> Path:
        return self.folder / "ledger"

    def ran(self) -> dict[str, int]:
        """How many runs finished per key."""
        counts: dict[str, int] = {}
        for line in self.ledger.read_text().splitlines():
            key = line.split()[0]
            counts[key] = counts.get(key, 0) + 1
        return counts

    def send(self, key: str) -> str:
        return self.hub.send_task("outage.record", (str(self.ledger), key)).id

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = self.log_path(len(self.workers))
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hubbub", "worker", "-A", "app:hub", "--pool", "threads"],
                cwd=self.folder, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        index = len(self.workers) - 1
        wait_for(lambda: " online: broker " in self.log(index) or proc.poll() is not None,
                 20, "worker online")
        assert proc.poll() is None, self.log(index)
        return proc

    def log_path(self, index: int) -> Path:
        return self.folder / f"worker-{index}.log"

    def log(self, index: int = 0) -> str:
        return self.log_path(index).read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)  # only processes this test started
            proc.wait(10)


@pytest.fixture
def site(outage: Outage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "ledger").touch()
    results = f"sqlite:///{tmp_path / 'results.db'}"  # neither broker keeps results
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    env.update(HUBBUB_BROKER=outage.url, HUBBUB_RESULTS=results, PYTHONUNBUFFERED="1")
    if isinstance(outage, OwnRedis):
        # Redis keeps a lease by deadline, not by connection: what a worker had fetched when
        # the server died comes back when that lease runs out.
        env["HUBBUB_LEASE"] = "2"
    for name in [k for k in os.environ if k.startswith("HUBBUB_")]:
        monkeypatch.delenv(name)
    s = Site(tmp_path, env, Hub(outage.url, results=results))
    try:
        yield s
    finally:
        s.stop_all()  # before the broker goes, so no worker outlives the test
        s.hub.close()


def test_a_waiting_worker_resumes_consuming_when_the_broker_comes_back(
    outage: Outage, site: Site
) -> None:
    worker = site.start_worker()
    site.send("before")
    wait_for(lambda: "before" in site.ran(), 15, "a task run before the outage")
    outage.cut()
    wait_for(lambda: "fetch failed" in site.log(), 15, "the worker noticing the outage")
    assert worker.poll() is None, "the worker must wait the outage out, not exit"
    outage.restore()
    result = site.hub.send_task("outage.record", (str(site.ledger), "after"))
    assert result.get(timeout=20) == "after"
    assert result.state == State.SUCCESS
    ran = site.ran()
    # "before" may have run twice: its ack can be lost with the connection (at-least-once).
    assert (ran["after"], set(ran)) == (1, {"before", "after"})
    assert worker.poll() is None


@dataclass
class Producer:
    """Sends one task after another from a thread, noting which publishes returned (were
    confirmed) and which raised, and how long the slowest took."""

    site: Site
    confirmed: list[str] = field(default_factory=list)
    failed: list[tuple[str, BaseException]] = field(default_factory=list)
    slowest: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Producer:
        self._thread = threading.Thread(target=self._run, name="producer")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            key = f"k{n}"
            started = time.monotonic()
            try:
                self.site.send(key)
            except Exception as exc:  # judged by the test: only TransportError is allowed
                self.failed.append((key, exc))
            else:
                self.confirmed.append(key)
            self.slowest = max(self.slowest, time.monotonic() - started)


def test_nothing_a_publish_confirmed_is_lost_across_an_outage(outage: Outage, site: Site
                                                              ) -> None:
    site.start_worker()
    with Producer(site) as producer:
        wait_for(lambda: len(producer.confirmed) >= 30, 15, "30 publishes before the outage")
        outage.cut()
        wait_for(lambda: len(producer.failed) >= 2, 15, "publishes failing during the outage")
        before = len(producer.confirmed)
        outage.restore()
        wait_for(lambda: len(producer.confirmed) >= before + 30, 20,
                 "30 publishes after the outage")
    for key, error in producer.failed:
        assert isinstance(error, TransportError), f"{key}: {error!r}"
    assert producer.slowest < 10, "a publish must fail in bounded time, not hang"
    confirmed = set(producer.confirmed)
    wait_for(lambda: confirmed <= set(site.ran()), 25, "every confirmed task run")
    ran = site.ran()
    assert confirmed <= set(ran)
    assert set(ran) <= confirmed | {key for key, _ in producer.failed}  # nothing invented


async def test_a_publish_to_a_broker_that_stops_answering_fails_within_its_timeout(
    outage: Outage,
) -> None:
    def out(body: str) -> Outgoing:
        return Outgoing("q", body.encode(), body)

    # Redis bounds every command by its socket timeout; the others have publish_timeout.
    redis = isinstance(outage, OwnRedis)
    t = open_transport(outage.url + ("&socket_timeout=1" if redis else "&publish_timeout=1"))
    try:
        await t.connect()
        await t.publish([out("before")])
        outage.stall()
        started = time.monotonic()
        with pytest.raises(TransportUnavailable, match="timed out" if redis else "within 1s"):
            await t.publish([out("unanswered")])
        assert time.monotonic() - started < 4
        outage.restore()
        await t.publish([out("after")])
        seen: set[str] = set()
        deadline = time.monotonic() + 10
        while not {"before", "after"} <= seen and time.monotonic() < deadline:
            got = await t.fetch(["q"], limit=10, lease=30, wait=0.5)
            seen |= {d.id for d in got}
            await t.ack(got)
        assert {"before", "after"} <= seen <= {"before", "unanswered", "after"}
    finally:
        await t.close()
