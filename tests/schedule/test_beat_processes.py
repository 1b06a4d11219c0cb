"""Real beat processes sharing one store: each slot is sent once, and kill -9 of the leader
is survived within a lease with no slot lost or doubled. SQLite file and Redis."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from hubbub.message import peek_id
from hubbub.transports import open_transport
from tests import brokers

LEASE = 1.5  # seconds; short, so that a takeover fits in a short test

APP = textwrap.dedent('''
    import os, time
    from hubbub import Hub, Middleware

    class Ledger(Middleware):
        """Appends one line per task this process publishes: pid, time, task id."""

        async def around_publish(self, envelope, call_next):
            await call_next(envelope)
            with open(os.environ["LEDGER"], "a") as f:
                f.write(f"{os.getpid()} {time.time():.3f} {envelope.id}\\n")

    hub = Hub(middleware=[Ledger()])  # $HUBBUB_BROKER, set by the test

    @hub.periodic(every=1)
    def tick() -> None: ...
''')


@dataclass
class Line:
    pid: int
    at: float
    id: str

    @property
    def slot(self) -> float:
        return datetime.fromisoformat(self.id.split("@", 1)[1].replace("Z", "+00:00")).timestamp()


@dataclass
class Beats:
    """Beat processes in a scratch folder, all on one broker URL; killed at teardown."""

    folder: Path
    url: str
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
        return {**env, "HUBBUB_BROKER": self.url, "LEDGER": str(self.ledger),
                "PYTHONUNBUFFERED": "1"}

    @property
    def ledger(self) -> Path:
        return self.folder / "ledger.txt"

    def start(self, count: int) -> None:
        for _ in range(count):
            with open(self.folder / f"beat-{len(self.procs)}.log", "wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "hubbub", "beat", "-A", "app:hub",
                     "--lease", str(LEASE)],
                    cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT)
            self.procs[proc.pid] = proc

    def lines(self) -> list[Line]:
        if not self.ledger.exists():
            return []
        found = []
        for raw in self.ledger.read_text().splitlines():
            pid, at, id_ = raw.split(" ", 2)
            found.append(Line(int(pid), float(at), id_))
        return found

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.folder.glob("beat-*.log")))

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)


def broker_ids(url: str) -> collections.Counter[str]:
    """How many messages the broker holds per task id (fetching them under a lease)."""
    async def read() -> collections.Counter[str]:
        transport = open_transport(url)
        await transport.connect()
        try:
            counts: collections.Counter[str] = collections.Counter()
            while batch := await transport.fetch(["default"], limit=500, lease=60, wait=0):
                counts.update(peek_id(d.body) or "?" for d in batch)
            return counts
        finally:
            await transport.close()

    return asyncio.run(read())


@pytest.fixture(params=["sqlite", "redis"])
def beats(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Beats]:
    module = brokers.load(request.param)
    brokers.require(module)  # Redis unreachable: skip locally, fail under CI=true
    url = module.make_url(tmp_path, "beat" + uuid.uuid4().hex[:8])
    (tmp_path / "app.py").write_text(APP)
    b = Beats(tmp_path, url)
    try:
        yield b
    finally:
        b.kill_all()
        asyncio.run(module.cleanup(url))


def assert_each_slot_once(lines: list[Line]) -> None:
    ids = collections.Counter(line.id for line in lines)
    assert [i for i, n in ids.items() if n > 1] == [], "a slot was sent twice"
    slots = sorted(line.slot for line in lines)
    gaps = [(a, b) for a, b in itertools.pairwise(slots) if b - a != 1.0]
    assert gaps == [], "a slot was skipped"


@pytest.mark.parametrize("count", [2, 3])
def test_beat_processes_send_each_slot_once_and_survive_kill_9_of_the_leader(
    beats: Beats, count: int,
) -> None:
    beats.start(count)
    wait_for(lambda: len(beats.lines()) >= 4, 20, "four slots sent")
    [leader] = {line.pid for line in beats.lines()}  # one leader, and only it sends
    assert leader in beats.procs

    # Kill between two slots (slots are on whole seconds), not while it is sending one.
    wait_for(lambda: 0.3 < time.time() % 1 < 0.6, 2, "the middle of a second")
    beats.procs[leader].send_signal(signal.SIGKILL)
    killed_at = time.time()
    beats.procs[leader].wait(5)
    wait_for(lambda: any(line.pid != leader for line in beats.lines()), 10, "a new leader")
    took_over = min(line.at for line in beats.lines() if line.pid != leader) - killed_at
    print(f"\n{count} beats on {beats.url.split(':')[0]}: takeover {took_over:.2f}s "
          f"after kill -9 (lease {LEASE}s)")
    last_before = max(line.slot for line in beats.lines() if line.pid == leader)
    wait_for(lambda: max(line.slot for line in beats.lines()) >= last_before + 3, 10,
             "three more slots")
    beats.stop_all()

    lines = beats.lines()
    assert_each_slot_once(lines)
    assert took_over <= LEASE * 1.1 + 0.75  # the lease, its poll interval, scheduling noise
    assert len({line.pid for line in lines}) == 2
    assert broker_ids(beats.url) == collections.Counter(line.id for line in lines)
    assert "Traceback" not in beats.logs()


def test_schedule_list_shows_the_entries_and_the_leader(beats: Beats) -> None:
    beats.start(1)
    wait_for(lambda: len(beats.lines()) >= 1, 20, "a slot sent")
    [leader] = {line.pid for line in beats.lines()}

    shown = subprocess.run(
        [sys.executable, "-m", "hubbub", "schedule", "list", "-A", "app:hub"],
        cwd=beats.folder, env={**beats.env, "COLUMNS": "200"}, capture_output=True, text=True,
        timeout=30)

    assert shown.returncode == 0, shown.stderr
    assert "app.tick" in shown.stdout
    assert "every 1s" in shown.stdout
    assert f"leader: {os.uname().nodename}:{leader}:" in shown.stdout
    beats.stop_all()
    assert beats.procs[leader].returncode == 0
    assert "stopped leading" in beats.logs()
