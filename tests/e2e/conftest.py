from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hubbub import Hub
from hubbub._loader import load_hub
from tests import brokers

APP = textwrap.dedent('''
    import asyncio, os, time
    from pathlib import Path
    from hubbub import Hub, Reject

    hub = Hub()  # $HUBBUB_BROKER, set by the test

    @hub.task
    def slow(marker: str, seconds: float) -> str:
        Path(marker + ".pid").write_text(str(os.getpid()))  # tells the test it started
        time.sleep(seconds)
        with open(marker + ".runs", "a") as f:
            f.write("done\\n")
        return "ok"

    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    @hub.task
    def boom() -> None:
        raise RuntimeError("kaput")

    @hub.task
    def refuse() -> None:
        raise Reject("kaput: not for this worker")
''')


class Cli:
    """Runs the real ``hubbub`` command in a scratch folder with its own broker file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = f"sqlite:///{folder / 'broker.db'}"
        self.env = {**os.environ, "HUBBUB_BROKER": self.url, "PYTHONUNBUFFERED": "1"}
        self.env.pop("HUBBUB_RESULTS", None)
        self.procs: list[subprocess.Popen[str]] = []

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hubbub", *args], cwd=self.folder,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def start_worker(self, *args: str) -> subprocess.Popen[str]:
        return self.start_worker_app("app:hub", *args)

    def start_worker_app(self, app: str, *args: str) -> subprocess.Popen[str]:
        with open(self.folder / f"worker-{len(self.procs)}.log", "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hubbub", "worker", "-A", app, *args],
                cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT, text=True,
            )
        self.procs.append(proc)
        return proc

    def log(self, index: int = 0) -> str:
        return (self.folder / f"worker-{index}.log").read_text()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    (tmp_path / "app.py").write_text(APP)
    c = Cli(tmp_path)
    monkeypatch.setenv("HUBBUB_BROKER", c.url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture
def broker_url(request: pytest.FixtureRequest, cli: Cli, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Points ``cli`` and this process at a fresh namespace on the shared server of the broker
    named by indirect parametrization (``tests.brokers``); results go to an SQLite file when
    the broker keeps none. Kills the test's workers, then deletes the namespace, even on
    failure."""
    broker = brokers.load(request.param)
    brokers.require(broker)
    run_id = "e2e" + uuid.uuid4().hex[:10]
    url = broker.make_url(tmp_path, run_id)
    cli.url = url
    cli.env["HUBBUB_BROKER"] = url
    monkeypatch.setenv("HUBBUB_BROKER", url)
    if broker.results_url(tmp_path, run_id) is None:
        results = f"sqlite:///{tmp_path / 'results.db'}"
        cli.env["HUBBUB_RESULTS"] = results
        monkeypatch.setenv("HUBBUB_RESULTS", results)
    try:
        yield url
    finally:
        cli.stop_all()  # before deleting the namespace, so no worker creates it again
        asyncio.run(broker.cleanup(url))


def open_app() -> Iterator[Hub]:
    """Loads the scratch ``app:hub`` afresh and closes it after; ``yield from`` in a fixture."""
    sys.modules.pop("app", None)
    hub = load_hub("app:hub")
    try:
        yield hub
    finally:
        hub.close()
        sys.modules.pop("app", None)


EMPTY = {"ready": 0, "leased": 0, "delayed": 0, "dead": 0}


def queue_stats(hub: Hub) -> dict[str, int]:
    async def read() -> dict[str, int]:
        client = await hub.client()
        [s] = await client.transport.stats(["default"])
        return {"ready": s.ready, "leased": s.leased, "delayed": s.delayed, "dead": s.dead}

    return hub.bridge.run(read())


def start_online(cli: Cli, *args: str) -> subprocess.Popen[str]:
    """Start a worker and wait until it says it is online."""
    proc = cli.start_worker(*args)
    index = len(cli.procs) - 1
    wait_for(lambda: " online: broker " in cli.log(index), what=f"worker {index} online")
    return proc
