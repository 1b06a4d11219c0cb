"""The real CLI worker on RabbitMQ: killed with SIGKILL mid-task, its delivery goes back to
the queue with its connection, and a second worker completes it once. Runs against the shared
RabbitMQ at 127.0.0.1:5672 under a prefix of its own, deleted afterwards; results go to an
SQLite file because RabbitMQ keeps none. It kills only the workers it started."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub import Hub, State
from hubbub._loader import load_hub
from tests import brokers
from tests.e2e.conftest import Cli, wait_for


@pytest.fixture
def amqp_url(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Points the scratch app and every worker the test starts at a fresh AMQP prefix."""
    broker = brokers.load("amqp")
    brokers.require(broker)
    url = broker.make_url(tmp_path, "e2e" + uuid.uuid4().hex[:10])
    results = f"sqlite:///{tmp_path / 'results.db'}"
    cli.url = url
    cli.env.update(HUBBUB_BROKER=url, HUBBUB_RESULTS=results)
    monkeypatch.setenv("HUBBUB_BROKER", url)
    monkeypatch.setenv("HUBBUB_RESULTS", results)
    try:
        yield url
    finally:
        cli.stop_all()  # before deleting the queues, so no worker declares them again
        asyncio.run(broker.cleanup(url))


@pytest.fixture
def app(amqp_url: str) -> Iterator[Hub]:
    sys.modules.pop("app", None)
    hub = load_hub("app:hub")
    try:
        yield hub
    finally:
        hub.close()
        sys.modules.pop("app", None)


def queue_stats(hub: Hub) -> dict[str, int]:
    async def read() -> dict[str, int]:
        client = await hub.client()
        [s] = await client.transport.stats(["default"])
        return {"ready": s.ready, "delayed": s.delayed, "dead": s.dead}

    return hub.bridge.run(read())


def start_online(cli: Cli, *args: str) -> int:
    """Start a worker and wait until it says it is online; returns its index in ``cli.procs``."""
    cli.start_worker(*args)
    index = len(cli.procs) - 1
    wait_for(lambda: " online: broker " in cli.log(index), what=f"worker {index} online")
    return index


def test_a_worker_killed_mid_task_on_rabbitmq_loses_nothing(cli: Cli, app: Hub, tmp_path: Path
                                                            ) -> None:
    marker = str(tmp_path / "job")
    pid_file, ledger = Path(marker + ".pid"), Path(marker + ".runs")
    result = app.tasks["app.slow"].delay(marker, 1.0)
    first = cli.start_worker("--pool", "threads")
    wait_for(lambda: pid_file.exists(), what="task started in the first worker")
    assert pid_file.read_text() == str(first.pid)
    second = cli.procs[start_online(cli, "--pool", "threads")]
    pid_file.unlink()
    os.kill(first.pid, signal.SIGKILL)  # the worker we started, mid-task
    first.wait(10)
    # The broker takes the delivery back when the connection drops; the second worker runs it.
    assert result.get(timeout=30) == "ok"
    assert result.state == State.SUCCESS
    assert pid_file.read_text() == str(second.pid)
    assert ledger.read_text() == "done\n"  # exactly one completed run: the killed one never was
    wait_for(lambda: queue_stats(app) == {"ready": 0, "delayed": 0, "dead": 0},
             what="the message acked and gone")
