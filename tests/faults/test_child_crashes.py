"""A task that kills its child process fails alone: the worker keeps serving.

Every case runs a real prefork child: a segfault, ``os._exit``, an address-space limit hit
while allocating, a task that never returns (hard limit), and, through the real CLI, a child
killed with SIGKILL mid-task. A ``KeyboardInterrupt`` raised by a task is only a failure: it
costs no child.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from hubbub import State, TaskCrashed, TaskFailed
from hubbub._loader import load_hub
from hubbub.testing import drain
from hubbub.worker.pools.prefork import PreforkPool
from tests.e2e.conftest import APP, Cli, wait_for
from tests.worker.child_app import child_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModuleType]:
    with child_app(tmp_path) as module:
        yield module


CRASHES = {
    # case: (task, args, error type, words the reason must contain)
    "segfault": ("segfault", (), "TaskCrashed", "died with signal SIGSEGV while running task"),
    "os._exit": ("exit_now", (3,), "TaskCrashed", "exited with code 3 while running task"),
    "memory limit": ("hog", (64,), "MemoryError", ""),
    "never returns": ("forever", ("{tmp}/forever.pid",), "TaskTimedOut", "time limit of 0.5s"),
}


@pytest.mark.parametrize("case", list(CRASHES))
def test_a_task_that_kills_its_child_fails_and_the_next_100_tasks_complete(
    app: ModuleType, tmp_path: Path, case: str
) -> None:
    name, args, error_type, reason = CRASHES[case]
    args = tuple(a.format(tmp=tmp_path) if isinstance(a, str) else a for a in args)
    me = os.getpid()
    crashing = getattr(app, name).delay(*args)
    after = app.add.delay_many([(i, 1) for i in range(100)])
    pool = PreforkPool(1)  # one child: the 100 tasks can only run on its replacement
    worker = drain(app.hub, pool=pool, timeout=40)
    with pytest.raises(TaskFailed) as info:
        crashing.get(timeout=5)
    assert info.value.type == error_type
    assert reason in info.value.message
    if error_type == "TaskCrashed":
        assert getattr(app, name).name in info.value.message
    assert [r.get(timeout=5) for r in after] == [i + 1 for i in range(100)]
    assert worker.processed == 101
    assert os.getpid() == me  # the worker is the test's own process, alive throughout
    assert pool.children.started == 2  # the child that died, and its replacement


def test_a_task_raising_keyboard_interrupt_fails_and_its_child_serves_on(
    app: ModuleType,
) -> None:
    escaping = app.escape.delay()
    after = app.add.delay_many([(i, 1) for i in range(10)])
    pool = PreforkPool(1)
    drain(app.hub, pool=pool, timeout=40)
    with pytest.raises(TaskFailed) as info:
        escaping.get(timeout=5)
    assert (info.value.type, info.value.message) == ("KeyboardInterrupt", "escapes the task runner")
    assert [r.get(timeout=5) for r in after] == [i + 1 for i in range(10)]
    assert pool.children.started == 1


def test_all_of_a_hybrid_childs_jobs_crash_with_it_and_others_go_on(app: ModuleType) -> None:
    from hubbub.worker.pools.hybrid import HybridPool

    naps = [app.async_nap.delay(1.0) for _ in range(3)]
    crash = app.segfault.delay()
    after = app.add.delay_many([(i, 1) for i in range(20)])
    drain(app.hub, pool=HybridPool(1, coroutines=4), timeout=40)  # naps + crash fill it
    reasons = []
    for result in [*naps, crash]:
        with pytest.raises(TaskCrashed) as info:  # Result.get raises the specific kind
            result.get(timeout=5)
        assert info.value.type == "TaskCrashed"
        assert "died with signal SIGSEGV" in info.value.message
        reasons.append(info.value.message)
    assert "while running task" in reasons[-1]
    assert [r.get(timeout=5) for r in after] == [i + 1 for i in range(20)]


def test_cli_worker_survives_a_child_killed_with_sigkill_mid_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app.py").write_text(APP + textwrap.dedent('''
        @hub.task
        def whoami() -> int:
            return os.getpid()
    '''))
    cli = Cli(tmp_path)
    monkeypatch.setenv("HUBBUB_BROKER", cli.url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("app", None)
    hub = load_hub("app:hub")
    try:
        marker = str(tmp_path / "job")
        victim = hub.tasks["app.slow"].delay(marker, 30)
        worker = cli.start_worker("--pool", "prefork", "-c", "2", "--grace", "5")
        pid_file = Path(marker + ".pid")
        # The child creates the file, then writes its pid: wait for the pid, not the file.
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "",
                 what="task started in a child")
        child = int(pid_file.read_text())
        assert child != worker.pid
        os.kill(child, signal.SIGKILL)  # the child the task reported, of the worker we started
        with pytest.raises(TaskFailed) as info:
            victim.get(timeout=20)
        assert info.value.type == "TaskCrashed"
        assert f"child {child} died with signal SIGKILL while running task app.slow" in (
            info.value.message)
        assert victim.state == State.FAILURE
        later = [hub.tasks["app.whoami"].delay() for _ in range(5)]
        assert child not in {r.get(timeout=20) for r in later}
        assert worker.poll() is None  # the worker itself never stopped
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
        assert "died with signal SIGKILL" in cli.log()
    finally:
        cli.stop_all()
        hub.close()
        sys.modules.pop("app", None)


def test_children_do_not_outlive_a_stopped_worker(tmp_path: Path) -> None:
    """After a graceful stop no child is left: ``ps`` finds no process whose parent is gone."""
    (tmp_path / "app.py").write_text(APP)
    cli = Cli(tmp_path)
    env_path = os.pathsep.join([str(tmp_path), *sys.path])
    cli.env["PYTHONPATH"] = env_path
    worker = cli.start_worker("--pool", "prefork", "-c", "2")
    try:
        wait_for(lambda: "online" in cli.log(), what="worker online")
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(worker.pid)],
                                  capture_output=True, text=True, check=False).stdout.split()
        assert len(children) == 2
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
        for pid in children:
            assert not Path(f"/proc/{pid}").exists()
    finally:
        cli.stop_all()
