"""Where the limit tests run: a broker namespace with a result store, a ledger, and worker
processes of ``tests.limits.limitapp`` that are killed in teardown even when a test failed.

``place`` is parametrized over SQLite (broker and results in one file), Redis (both), and
RabbitMQ with its results in Redis (RabbitMQ keeps none), each with its own prefix or file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from hubbub import Hub
from tests import brokers
from tests.faults import faultapp
from tests.faults.ledger import Ledger, wait_until
from tests.limits import limitapp

REPO = Path(__file__).resolve().parents[2]
APP = "tests.limits.limitapp:hub"
PLACES = ["sqlite", "redis", "amqp"]


@dataclass
class Place:
    """One test's broker namespace, result store, ledger and worker processes."""

    name: str
    module: ModuleType
    url: str
    results: str
    folder: Path
    ledger: Ledger
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _hub: Hub | None = None

    @property
    def hub(self) -> Hub:
        """The producer (the test's own process)."""
        if self._hub is None:
            self._hub = limitapp.build(self.url, results=self.results, lease=3)
        return self._hub

    def log(self, index: int) -> Path:
        return self.folder / f"worker-{index}.log"

    def start_worker(self, *args: str, lease: float = 3.0) -> subprocess.Popen[bytes]:
        """``hubbub worker -A tests.limits.limitapp:hub ARGS``, waited for until online."""
        log = self.log(len(self.workers))
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hubbub", "worker", "-A", APP, "--lease", str(lease),
                 *args], cwd=self.folder, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.workers.append(proc)

        def online() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited with {proc.returncode}:\n"
                                     + log.read_text(errors="replace"))
            return " online: broker " in log.read_text(errors="replace")

        wait_until(online, 30, "worker online")
        return proc

    def logs(self) -> str:
        return "\n".join(self.log(i).read_text(errors="replace")[-3000:]
                         for i in range(len(self.workers)))

    def finish(self, timeout: float = 30.0) -> None:
        """Stop every live worker gracefully; each must exit 0."""
        live = [p for p in self.workers if p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        for proc in live:
            assert proc.wait(timeout) == 0, self.logs()

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        if self._hub is not None:
            self._hub.close()
        self.ledger.close()
        asyncio.run(self.module.cleanup(self.url))
        if self.name == "amqp":  # its results were in Redis, under the same run id
            asyncio.run(brokers.load("redis").cleanup(self.results))


def place_params(*names: str) -> list[object]:
    return [pytest.param(n, id=n) for n in (names or PLACES) if brokers.available(n)]


@pytest.fixture
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    module = brokers.load(request.param)
    brokers.require(module)
    run_id = "lim" + uuid.uuid4().hex[:10]
    url = module.make_url(tmp_path, run_id)
    results = module.results_url(tmp_path, run_id)
    if results is None:  # RabbitMQ: results in Redis
        redis = brokers.load("redis")
        brokers.require(redis)
        results = redis.results_url(tmp_path, run_id)
    ledger = Ledger(tmp_path / "ledger.jsonl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    pythonpath = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update({"HUBBUB_BROKER": url, "HUBBUB_RESULTS": results, "PYTHONPATH": pythonpath,
                "PYTHONUNBUFFERED": "1", faultapp.LEDGER_ENV: str(ledger)})
    p = Place(request.param, module, url, results, tmp_path, ledger, env)
    try:
        yield p
    finally:
        p.close()
