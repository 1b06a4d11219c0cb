"""The real CLI worker on each networked broker: killed with SIGKILL mid-task, its delivery
comes back (Redis: when its lease runs out; RabbitMQ and beanstalkd: when its connection
drops), and a second worker completes it exactly once. Runs against the shared servers under
a namespace of its own, deleted afterwards; it kills only the workers it started."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub import Hub, State
from tests.e2e.conftest import EMPTY, Cli, open_app, queue_stats, start_online, wait_for


@pytest.fixture
def app(broker_url: str) -> Iterator[Hub]:
    yield from open_app()


# Redis only takes a message back once its lease runs out, so its workers get a short one.
@pytest.mark.parametrize(("broker_url", "extra"), [
    pytest.param("redis", ["--lease", "1"], id="redis"),
    pytest.param("amqp", [], id="amqp"),
    pytest.param("beanstalk", [], id="beanstalk"),
], indirect=["broker_url"])
def test_a_worker_killed_mid_task_loses_nothing(cli: Cli, app: Hub, tmp_path: Path,
                                                extra: list[str]) -> None:
    args = ["--pool", "threads", *extra]
    marker = str(tmp_path / "job")
    pid_file, ledger = Path(marker + ".pid"), Path(marker + ".runs")
    result = app.tasks["app.slow"].delay(marker, 1.0)
    first = cli.start_worker(*args)
    # Non-empty, not just there: the task creates the file, then writes its pid into it.
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "",
             what="task started in the first worker")
    assert pid_file.read_text() == str(first.pid)
    # Kill at once, then start the second worker: starting it first let the 1 s task finish
    # on a loaded machine before the kill (then no pid file came back).
    pid_file.unlink()
    os.kill(first.pid, signal.SIGKILL)  # the worker we started, mid-task
    first.wait(10)
    second = start_online(cli, *args)
    assert result.get(timeout=30) == "ok"  # the second worker took it back and ran it
    assert result.state == State.SUCCESS
    assert pid_file.read_text() == str(second.pid)
    assert ledger.read_text() == "done\n"  # exactly one completed run: the killed one never was
    wait_for(lambda: queue_stats(app) == EMPTY, what="the message acked and gone")
