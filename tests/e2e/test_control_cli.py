"""``hubbub inspect`` / ``hubbub control`` against real worker processes, on every broker that
carries a control plane; and the autoscale banner and log lines of a real worker.

Every worker is one this test started; the fixtures kill what is left, even on failure, and
delete the test's broker namespace."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubbub import Hub
from hubbub._loader import load_hub
from tests.e2e.conftest import Cli, open_app, start_online, wait_for

BEAT = 0.5  # seconds between the test workers' heartbeats


def answers(cli: Cli, *args: str) -> dict[str, dict[str, Any]]:
    """``hubbub ARGS --json``, by worker name; the command must succeed."""
    done = cli.run(*args, "--json", "--timeout", "5", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return {entry["worker"]: entry for entry in map(json.loads, done.stdout.splitlines())}


def started(folder: Path, *markers: str) -> bool:
    return all((folder / f"{m}.pid").exists() for m in markers)


CONTROL_APP = textwrap.dedent('''
    import os, time
    from pathlib import Path
    from hubbub import Hub

    hub = Hub()  # $HUBBUB_BROKER, set by the test

    @hub.task
    def hold(marker: str) -> str:
        Path(marker + ".pid").write_text(str(os.getpid()))  # tells the test it started
        release = Path(marker).parent / "release"  # the test creates it to let tasks end
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with open(marker + ".runs", "a") as f:
            f.write("done\\n")
        return "ok"

    @hub.task
    def add(x: int, y: int) -> int:
        return x + y
''')


def start(cli: Cli, *args: str) -> subprocess.Popen[str]:
    """A worker of the control app, once it says it is online."""
    proc = cli.start_worker_app("ctlapp:hub", "--heartbeat", str(BEAT), *args)
    index = len(cli.procs) - 1
    wait_for(lambda: " online: broker " in cli.log(index), what=f"worker {index} online")
    return proc


@pytest.fixture
def control_app(cli: Cli, tmp_path: Path, broker_url: str) -> Iterator[Hub]:
    """The control app, loaded here too (to send tasks), on the test's broker."""
    (tmp_path / "ctlapp.py").write_text(CONTROL_APP)
    sys.modules.pop("ctlapp", None)
    hub = load_hub("ctlapp:hub")
    try:
        yield hub
    finally:
        hub.close()
        sys.modules.pop("ctlapp", None)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("broker_url", ["sqlite", "redis", "amqp", "beanstalk"], indirect=True)
def test_inspect_grow_and_shutdown_steer_real_workers(cli: Cli, control_app: Hub,
                                                      tmp_path: Path) -> None:
    first = start(cli, "--pool", "threads", "-c", "1", "-n", "w1")
    second = start(cli, "--pool", "threads", "-c", "1", "-Q", "other", "-n", "w2")
    assert set(answers(cli, "control", "ping")) == {"w1", "w2"}

    hold = control_app.tasks["ctlapp.hold"]
    # w1 has one slot (and a prefetch of one): one task runs, the next waits.
    results = [hold.delay(str(tmp_path / f"h{i}")) for i in range(3)]
    wait_for(lambda: started(tmp_path, "h0"), what="first task started")
    active = answers(cli, "inspect", "active")
    assert [t["id"] for t in active["w1"]["value"]] == [results[0].id]
    assert active["w1"]["value"][0]["name"] == "ctlapp.hold"
    assert active["w2"]["value"] == []

    grown = answers(cli, "control", "pool-grow", "2", "-d", "w1")
    assert grown["w1"]["value"]["concurrency"] == 3
    wait_for(lambda: started(tmp_path, "h0", "h1", "h2"), what="three running at once")
    running = answers(cli, "inspect", "active", "-d", "w1")["w1"]["value"]
    assert sorted(t["id"] for t in running) == sorted(r.id for r in results)

    stopping = cli.run("control", "shutdown", "-d", "w1", "--timeout", "5", timeout=60)
    assert stopping.returncode == 0, stopping.stderr
    wait_for(lambda: "stopping gracefully" in cli.log(0), what="w1 stopping")
    assert first.poll() is None  # graceful: it waits for its running tasks
    (tmp_path / "release").touch()
    assert first.wait(30) == 0
    assert [r.get(timeout=10) for r in results] == ["ok", "ok", "ok"]
    assert all((tmp_path / f"h{i}.runs").read_text() == "done\n" for i in range(3))

    add = control_app.tasks["ctlapp.add"]
    assert add.apply_async((2, 3), queue="other").get(timeout=20) == 5  # w2 serves on

    gone = cli.run("control", "ping", "-d", "w1", "--timeout", "1", timeout=60)
    assert gone.returncode == 1
    [line] = gone.stderr.strip().splitlines()
    assert line.startswith("error: no reply to ping from worker 'w1' within 1s")
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("broker_url", ["sqlite"], indirect=True)
def test_pool_grow_of_a_prefork_worker_starts_children_that_run_at_once(
    cli: Cli, control_app: Hub, tmp_path: Path,
) -> None:
    worker = start(cli, "--pool", "prefork", "-c", "1", "-n", "pf")
    hold = control_app.tasks["ctlapp.hold"]
    results = [hold.delay(str(tmp_path / f"p{i}")) for i in range(3)]
    wait_for(lambda: started(tmp_path, "p0"), what="first task started")
    grown = answers(cli, "control", "pool-grow", "2")
    assert grown["pf"]["value"]["concurrency"] == 3
    wait_for(lambda: started(tmp_path, "p0", "p1", "p2"), timeout=60,
             what="three running at once")
    pids = {(tmp_path / f"p{i}.pid").read_text() for i in range(3)}
    assert len(pids) == 3  # each in a child of its own
    stats = answers(cli, "inspect", "stats")["pf"]["value"]
    assert stats["lanes"][0]["concurrency"] == 3
    assert stats["running"] == 3
    (tmp_path / "release").touch()
    assert [r.get(timeout=30) for r in results] == ["ok", "ok", "ok"]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


@pytest.mark.timeout(90)
def test_autoscale_bounds_are_in_the_banner_and_every_resize_is_logged(
    cli: Cli, tmp_path: Path,
) -> None:
    worker = start_online(cli, "--pool", "threads", "--autoscale", "3,1")
    assert "autoscale default: 1..3 threads slots" in cli.log(0)
    hub = next(gen := open_app())
    try:
        slow = hub.tasks["app.slow"]
        results = [slow.delay(str(tmp_path / f"a{i}"), 1.0) for i in range(4)]
        wait_for(lambda: "lane default: pool threads 1 -> " in cli.log(0), what="a grow")
        assert [r.get(timeout=30) for r in results] == ["ok"] * 4
    finally:
        gen.close()
    # Idle for a while, the lane shrinks back a step at a time, each step logged.
    wait_for(lambda: " -> 1 (autoscale: 0 of 2 busy for" in cli.log(0), timeout=40,
             what="a shrink back to 1")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("broker_url", ["sqlite"], indirect=True)
def test_sigterm_after_a_remote_shutdown_releases_running_work_and_exits(
    cli: Cli, control_app: Hub, tmp_path: Path,
) -> None:
    # A remote shutdown is the first stop; the operator's SIGTERM after it is the second
    # (it used to count as a first one, and the worker kept waiting for its task).
    first = start(cli, "--pool", "threads", "-c", "1", "-n", "w1")
    result = control_app.tasks["ctlapp.hold"].delay(str(tmp_path / "h"))
    wait_for(lambda: started(tmp_path, "h"), what="task started")
    stopping = cli.run("control", "shutdown", "-d", "w1", "--timeout", "5", timeout=60)
    assert stopping.returncode == 0, stopping.stderr
    wait_for(lambda: "stopping gracefully" in cli.log(0), what="w1 stopping")
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert "SIGTERM while stopping: releasing running tasks" in cli.log(0)
    (tmp_path / "h.pid").unlink()
    start(cli, "--pool", "threads", "-c", "1", "-n", "w2")  # the released task runs here
    wait_for(lambda: started(tmp_path, "h"), what="released task started again")
    (tmp_path / "release").touch()
    assert result.get(timeout=20) == "ok"
