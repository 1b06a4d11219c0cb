"""The real CLI worker as a subprocess: kill -9 loses nothing, signals stop it cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub import Hub, State
from hubbub._loader import load_hub
from tests.e2e.conftest import EMPTY, Cli, open_app, queue_stats, wait_for


@pytest.fixture
def app(cli: Cli) -> Iterator[Hub]:
    sys.modules.pop("app", None)
    hub = load_hub("app:hub")
    try:
        yield hub
    finally:
        hub.close()
        sys.modules.pop("app", None)


def test_worker_killed_mid_task_loses_nothing(cli: Cli, app: Hub, tmp_path: Path) -> None:
    marker = str(tmp_path / "job")
    result = app.tasks["app.slow"].delay(marker, 1.5)
    first = cli.start_worker("--lease", "1", "--pool", "threads")
    wait_for(lambda: Path(marker + ".pid").exists(), what="task started")
    os.kill(first.pid, signal.SIGKILL)  # the worker we started, mid-task
    first.wait(10)
    assert not Path(marker + ".runs").exists()
    cli.start_worker("--lease", "1", "--pool", "threads")
    assert result.get(timeout=30) == "ok"
    assert Path(marker + ".runs").read_text() == "done\n"


def test_first_sigterm_releases_unstarted_work_and_lets_the_running_task_finish(
    cli: Cli, app: Hub, tmp_path: Path
) -> None:
    marker = str(tmp_path / "long")
    slow = app.tasks["app.slow"]
    running = slow.delay(marker, 2.0)
    waiting = [slow.delay(str(tmp_path / f"w{i}"), 0) for i in range(2)]
    worker = cli.start_worker("--pool", "solo", "--prefetch", "2", "--grace", "20")
    wait_for(lambda: Path(marker + ".pid").exists(), what="task started")
    wait_for(lambda: queue_stats(app)["leased"] == 3, what="prefetched deliveries")
    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: queue_stats(app)["ready"] == 2, timeout=1.5,
             what="unstarted deliveries released at once")
    assert worker.wait(20) == 0
    assert running.get(timeout=5) == "ok"
    assert all(r.state == State.PENDING for r in waiting)
    assert "released 2 unstarted deliveries" in cli.log()


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_sigterm_right_after_a_burst_of_tasks_stops_the_worker_in_seconds(
    broker_url: str, cli: Cli
) -> None:
    """redis-py's asyncio client can return from a blocked read as if it timed out when the
    task is cancelled during it: the worker's control reader then read on, and its stop
    waited 15 s for it (3 x ``CONTROL_OPEN_WITHIN``). Whether the cancel lands so depends on
    timing (it did at this log level); tests/control/test_planes.py has the exact case."""
    cli.env["HUBBUB_RESULTS"] = "none"  # as most users run it; then nothing else reads Redis
    worker = cli.start_worker("--pool", "async", "-l", "error")
    hub = next(gen := open_app())
    try:
        add = hub.tasks["app.add"]
        add.delay(1, 1)
        wait_for(lambda: queue_stats(hub) == EMPTY, what="the worker online and idle")
        for i in range(100):  # 200 a second, as a steady trickle
            add.delay(i, i)
            time.sleep(0.005)
        wait_for(lambda: queue_stats(hub) == EMPTY, what="every task done")
    finally:
        gen.close()
    stopped = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.wait(30)
    took = time.monotonic() - stopped
    assert worker.returncode == 0
    assert took < 5.0, f"the worker took {took:.1f}s to stop:\n{cli.log()[-2000:]}"


def test_second_signal_releases_the_running_task_and_exits(
    cli: Cli, app: Hub, tmp_path: Path
) -> None:
    marker = str(tmp_path / "long")
    app.tasks["app.slow"].delay(marker, 30)
    worker = cli.start_worker("--pool", "threads", "--grace", "60")
    wait_for(lambda: Path(marker + ".pid").exists(), what="task started")
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.2)  # two separate signals, as a person pressing Ctrl-C twice
    worker.send_signal(signal.SIGTERM)
    worker.wait(15)
    assert queue_stats(app)["ready"] == 1
    assert "releasing 1 running tasks unfinished" in cli.log()


def test_call_with_wait_prints_the_result_from_a_running_worker(cli: Cli) -> None:
    cli.start_worker()
    done = cli.run("call", "app.add", "[2, 3]", "--wait", "--timeout", "20")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "5"


def test_status_dead_requeue_and_purge_commands(cli: Cli, app: Hub) -> None:
    app.tasks["app.refuse"].delay()  # refused: a message that could not run is a dead letter
    worker = cli.start_worker()
    wait_for(lambda: "kaput" in cli.run("dead").stdout, what="dead letter listed")
    worker.send_signal(signal.SIGTERM)
    worker.wait(20)
    status = cli.run("status")
    assert status.returncode == 0
    assert "default" in status.stdout
    assert "dead" in status.stdout
    requeued = cli.run("dead", "--all")
    assert "requeued 1 dead letters" in requeued.stdout
    assert queue_stats(app)["ready"] == 1
    purged = cli.run("purge", "default", "--yes")
    assert "purged 1 messages" in purged.stdout


def test_errors_are_one_clear_line_without_a_traceback(cli: Cli) -> None:
    missing = cli.run("worker", "-A", "nowhere:hub")
    assert missing.returncode == 1
    assert "cannot import 'nowhere'" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = cli.run("status", "--broker", "kafka://127.0.0.1:9092")
    assert bad.returncode == 1
    assert "unknown transport URL scheme 'kafka'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_demo_runs_end_to_end_and_exits_zero(cli: Cli) -> None:
    done = cli.run("demo", "--tasks", "300", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "summary" in done.stdout
    assert "dead-lettered" in done.stdout


def test_results_wait_from_async_code_without_blocking_its_loop(cli: Cli, app: Hub) -> None:
    cli.start_worker()
    result = app.tasks["app.add"].delay(20, 22)

    async def main() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        value = await result.wait(timeout=20)
        ticker.cancel()
        assert ticks > 0 or value == 42
        return value

    assert asyncio.run(main()) == 42
