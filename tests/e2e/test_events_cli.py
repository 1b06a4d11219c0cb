"""``hubbub events`` against real workers on every broker: it sees every event of 1,000 tasks."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.brokers import free_port
from tests.control.amqp_cleanup import delete_plane_exchanges
from tests.e2e.conftest import Cli, open_app, start_online, wait_for

TASKS = 1000


class Tail:
    """A ``hubbub events`` process of the test's, its output in files."""

    def __init__(self, cli: Cli, name: str, *args: str) -> None:
        self.out, self.err = cli.folder / f"{name}.out", cli.folder / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "hubbub", "events", *args],
                                         cwd=cli.folder, env=cli.env, stdout=out, stderr=err,
                                         text=True)
        cli.procs.append(self.proc)  # killed at teardown, whatever happens
        wait_for(lambda: "watching events" in self.err.read_text() or
                 self.proc.poll() is not None, what=f"{name} subscribed")
        assert self.proc.poll() is None, self.err.read_text()

    def events(self) -> list[dict[str, object]]:
        lines = self.out.read_text().splitlines()
        complete = lines if self.out.read_text().endswith("\n") else lines[:-1]
        return [json.loads(line) for line in complete]

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events() if e.get("type") == kind)


@pytest.fixture
def plane_cleanup(cli: Cli, broker_url: str) -> Iterator[str]:
    """Deletes the plane's RabbitMQ exchanges after the test's processes are gone."""
    try:
        yield broker_url
    finally:
        cli.stop_all()  # first: a live worker would declare them again
        if broker_url.startswith("amqp"):
            asyncio.run(delete_plane_exchanges(broker_url))


@pytest.mark.parametrize("broker_url", ["sqlite", "redis", "amqp", "beanstalk"],
                         indirect=True)
def test_events_sees_every_event_of_a_thousand_tasks(cli: Cli, plane_cleanup: str) -> None:
    everything = Tail(cli, "all", "--json", "--timeout", "300")
    failures = Tail(cli, "failures", "--json", "--state", "failure", "--count", "1",
                    "--timeout", "300")
    worker = start_online(cli, "--events", "--pool", "threads", "-c", "4", "-n", "w-events")
    for hub in open_app():
        add, boom = hub.tasks["app.add"], hub.tasks["app.boom"]
        sent = {r.id for r in add.delay_many([(i, i) for i in range(TASKS)])}
        boom.delay()
    wait_for(lambda: everything.count("task-succeeded") >= TASKS, timeout=180,
             what="1,000 task-succeeded events")
    assert failures.proc.wait(60) == 0  # --count 1: the one failure, then it stopped
    [failed] = failures.events()
    assert (failed["type"], failed["task"], failed["worker"]) == ("task-failed", "app.boom",
                                                                  "w-events")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    wait_for(lambda: everything.count("worker-offline") == 1, what="worker-offline")
    everything.proc.send_signal(signal.SIGINT)
    assert everything.proc.wait(30) == 0
    seen = everything.events()
    done = [e for e in seen if e["type"] == "task-succeeded"]
    assert {e["id"] for e in done} == sent  # every one, each once
    assert len(done) == TASKS
    assert all(e["worker"] == "w-events" and isinstance(e["runtime"], float) for e in done)
    kinds = {str(e["type"]) for e in seen}
    assert {"worker-online", "task-received", "task-started", "task-failed",
            "worker-offline"} <= kinds
    assert sum(1 for e in seen if e["type"] == "task-started") == TASKS + 1


def test_events_on_an_unreachable_broker_is_one_line(cli: Cli) -> None:
    done = cli.run("events", "--broker", f"redis://127.0.0.1:{free_port()}/0", timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ")
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_events_with_a_count_that_does_not_come_exits_1(cli: Cli) -> None:
    done = cli.run("events", "--count", "1", "--timeout", "0.5", timeout=60)
    assert done.returncode == 1
    assert "0 of 1 events" in done.stderr


def test_events_refuses_an_unknown_state(cli: Cli) -> None:
    done = cli.run("events", "--state", "finished", timeout=60)
    assert done.returncode == 2
    assert "unknown state 'finished'" in done.stderr
