"""``hubbub inspect`` and ``hubbub control`` in process (memory://), against real workers:
tables and JSON lines, and exit status 1 with one line when a worker does not answer or
answers with an error. The same against worker processes is tests/e2e/test_control_cli.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from hubbub import Hub
from hubbub.cli import main
from tests.control.fleet import Gate, fleet
from tests.worker.scratch import wait_until


@pytest.fixture
def hub() -> Iterator[Hub]:
    h = Hub(f"memory://control-cli-{uuid.uuid4().hex[:10]}", lease=5)
    try:
        yield h
    finally:
        h.close()


def hubbub(hub: Hub, *args: str) -> Result:
    """``hubbub ARGS`` on ``hub``'s broker, waiting up to 10 s for replies unless told (the
    wait ends as soon as every worker answered)."""
    wait = [] if "--timeout" in args else ["--timeout", "10"]
    return CliRunner().invoke(main, [*args, *wait, "--broker", hub.settings.broker],
                              env={"COLUMNS": "200"})


def lines(result: Result) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_inspect_active_shows_the_running_task_in_a_table_and_as_json(hub: Hub) -> None:
    gate = Gate()

    @hub.task
    def crunch(batch: str) -> None:
        gate.wait()

    with fleet(hub, {"w1": [(["default"], "threads", 1)], "w2": [(["b"], "threads", 1)]}):
        result = crunch.delay("batch-9")
        wait_until(lambda: gate.entered == 1, "task started")
        table = hubbub(hub, "inspect", "active")
        assert table.exit_code == 0, table.output
        assert result.id in table.stdout
        assert "'batch-9'" in table.stdout
        assert "(none)" in table.stdout  # w2 runs nothing
        as_json = lines(hubbub(hub, "inspect", "active", "--json", "-d", "w1"))
        assert [(e["worker"], e["ok"]) for e in as_json] == [("w1", True)]
        [task] = as_json[0]["value"]  # type: ignore[misc]
        assert task["id"] == result.id
        gate.open()
        result.get(timeout=10)


def test_control_commands_print_each_worker_s_answer(hub: Hub) -> None:
    with fleet(hub, {"w1": [(["default"], "threads", 1)], "w2": [(["b"], "solo", 1)]}):
        ping = hubbub(hub, "control", "ping", "-d", "w1,w2")
        assert ping.exit_code == 0, ping.output
        assert "w1" in ping.stdout
        assert "pong" in ping.stdout
        grow = hubbub(hub, "control", "pool-grow", "2", "-d", "w1", "--json")
        assert grow.exit_code == 0, grow.output
        assert lines(grow)[0]["value"] == {"lane": "default", "was": 1, "concurrency": 3}
        scale = hubbub(hub, "control", "autoscale", "6", "2", "-d", "w1", "--json")
        assert lines(scale)[0]["value"]["autoscale"] == [2, 6]  # type: ignore[index]
        stats = hubbub(hub, "inspect", "stats", "-d", "w1")
        assert stats.exit_code == 0, stats.output
        assert "lane default" in stats.stdout
        conf = hubbub(hub, "inspect", "conf", "--json")
        assert {e["worker"] for e in lines(conf)} == {"w1", "w2"}


def test_an_error_reply_exits_1_and_shows_the_reason(hub: Hub) -> None:
    with fleet(hub, {"w2": [(["b"], "solo", 1)]}):
        done = hubbub(hub, "control", "pool-grow")
        assert done.exit_code == 1
        assert "cannot resize" in done.stdout


def test_a_worker_that_is_gone_is_one_error_line_and_exit_1(hub: Hub) -> None:
    with fleet(hub, {"w1": [(["default"], "threads", 1)]}):
        done = hubbub(hub, "control", "shutdown", "-d", "gone", "--timeout", "0.3")
        assert done.exit_code == 1
        assert done.stdout == ""
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("error: no reply to shutdown from worker 'gone' within 0.3s")
        nobody = hubbub(hub, "inspect", "ping", "-d", "w1,gone", "--timeout", "0.3")
        assert nobody.exit_code == 1
        assert "pong" in nobody.stdout  # w1's answer is shown, then the error
        assert "'gone'" in nobody.stderr


def test_no_worker_at_all_is_one_error_line(hub: Hub) -> None:
    done = hubbub(hub, "inspect", "active", "--timeout", "0.2")
    assert done.exit_code == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: no worker answered active within 0.2s")


def test_an_unreachable_broker_is_one_error_line() -> None:
    done = CliRunner().invoke(main, ["control", "ping", "--broker",
                                     "redis://127.0.0.1:1/0"])
    assert done.exit_code == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error:")


def test_bad_arguments_are_usage_errors() -> None:
    done = CliRunner().invoke(main, ["control", "autoscale", "2,8", "--broker", "memory://x"])
    assert done.exit_code == 2
    assert "MIN <= MAX" in done.stderr
    done = CliRunner().invoke(main, ["control", "loglevel", "loud", "--broker", "memory://x"])
    assert done.exit_code == 2
