"""Hooks in the process that runs the task, on every pool: process start/stop, around_task,
before/after/failure callbacks, and what happens when one of them raises."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from hubbub import Hub, TaskFailed
from hubbub.errors import ConfigurationError
from hubbub.testing import drain
from hubbub.worker.pools import make_pool
from tests.worker.scratch import running_worker, scratch_app

POOLS = ["solo", "threads", "async", "prefork", "hybrid", "gevent"]
IN_PROCESS = {"solo", "threads", "async"}

APP = '''
import contextlib, contextvars, os
from pathlib import Path
from hubbub import Hub, current_task

hub = Hub("{url}", lease=5)
LEDGER = Path(__file__).with_name("ledger.txt")
STARTED_IN = []
INSIDE = contextvars.ContextVar("inside", default=None)

def note(line):
    with LEDGER.open("a") as f:
        f.write(line + "\\n")

@hub.on_process_start
def opened():
    STARTED_IN.append(os.getpid())
    note(f"start {{os.getpid()}}")

@hub.on_process_stop
def closed():
    note(f"stop {{os.getpid()}}")

@hub.around_task
@contextlib.contextmanager
def wrapped(ctx):
    token = INSIDE.set(ctx.id)
    note(f"enter {{ctx.task}} {{ctx.id}}")
    try:
        yield
    finally:
        INSIDE.reset(token)
        note(f"exit {{ctx.id}}")

@hub.before_task
def before(ctx):
    if ctx.task.endswith("refused_by_hook"):
        raise PermissionError("before_task said no")
    note(f"before {{ctx.id}}")

@hub.after_task
def after(ctx):
    note(f"after {{ctx.id}}")

@hub.on_task_failure
def failed(ctx, exc):
    note(f"failed {{ctx.id}} {{type(exc).__name__}}")

def facts():
    return dict(pid=os.getpid(), started=list(STARTED_IN), inside=INSIDE.get(),
                me=current_task().id)

@hub.task
def where():
    return facts()

@hub.task
async def where_async():
    return facts()

@hub.task
def boom():
    raise ValueError("boom")

@hub.task
def refused_by_hook():
    note("refused_by_hook ran")
    return "ran"
'''


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModuleType]:
    with scratch_app(tmp_path, APP, prefix="hooks") as module:
        yield module


def ledger(app: ModuleType) -> list[str]:
    path: Path = app.LEDGER
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("pool", POOLS)
def test_hooks_run_in_the_process_and_context_that_run_the_task(app: ModuleType,
                                                                pool: str) -> None:
    with running_worker(app, pool):
        sync = app.where.delay()
        coro = app.where_async.delay()
        failing = app.boom.delay()
        facts = [sync.get(timeout=30), coro.get(timeout=30)]
        with pytest.raises(ValueError, match="boom"):
            failing.get(timeout=30)
    for result, seen in zip((sync, coro), facts, strict=True):
        # The start hook ran once, in the very process that ran the task, before it.
        assert seen["started"] == [seen["pid"]]
        assert (seen["pid"] == os.getpid()) == (pool in IN_PROCESS)
        # around_task was entered with this task's context, in the task's own context.
        assert seen["inside"] == seen["me"] == result.id
    lines = ledger(app)
    for result in (sync, coro):
        mine = [line for line in lines if line.endswith(result.id)]
        assert [line.split()[0] for line in mine] == ["enter", "before", "after", "exit"]
    assert f"failed {failing.id} ValueError" in lines
    # The process that ran the tasks ran its stop hook when the worker stopped.
    assert f"stop {facts[0]['pid']}" in lines


@pytest.mark.parametrize("pool", POOLS)
def test_a_before_task_hook_that_raises_fails_that_task_not_the_worker(
    app: ModuleType, pool: str,
) -> None:
    with running_worker(app, pool):
        refused = app.refused_by_hook.delay()
        with pytest.raises(TaskFailed, match="before_task said no") as info:
            refused.get(timeout=30)
        assert isinstance(info.value, PermissionError)
        assert app.where.delay().get(timeout=30)["inside"] is not None  # it serves on
    assert "refused_by_hook ran" not in ledger(app)


BROKEN_START = '''
import os
from hubbub import Hub

hub = Hub("{url}", lease=5)

@hub.on_process_start
def connect_database():
    raise ConnectionRefusedError("database at 127.0.0.1:1 refused")

@hub.task
def add(x, y):
    return x + y
'''


@pytest.mark.parametrize("pool", ["async", "threads", "prefork", "hybrid"])
def test_a_failing_process_start_hook_stops_the_worker_with_its_error(
    tmp_path: Path, pool: str,
) -> None:
    with scratch_app(tmp_path, BROKEN_START, prefix="broken") as module:
        result = module.add.delay(1, 2)
        with pytest.raises(ConfigurationError, match=r"on_process_start hook broken_\w+\."
                           r"connect_database failed: ConnectionRefusedError: database at"):
            drain(module.hub, pool=make_pool(pool, 1), timeout=30)
        assert result.state == "PENDING"  # it never ran without its hook


def test_around_task_must_return_a_context_manager(tmp_path: Path) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'h.db'}")

    @hub.around_task
    def not_a_manager(ctx: object) -> object:
        return 42

    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(1, 2)
    drain(hub, timeout=30)
    with pytest.raises(TaskFailed, match="returned int, not a context manager"):
        result.get(timeout=5)
    hub.close()


def test_async_hooks_are_refused_at_registration(tmp_path: Path) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'h.db'}")

    async def open_pool() -> None:
        await asyncio.sleep(0)

    with pytest.raises(ConfigurationError, match="takes a plain function, not async def"):
        hub.on_process_start(open_pool)
    hub.close()


ASYNC_HOOK = '''
import asyncio, contextlib, contextvars
from hubbub import Hub

hub = Hub("{url}", lease=5)
SESSION = contextvars.ContextVar("session", default=None)
CLOSED = []

@hub.around_task
@contextlib.asynccontextmanager
async def session(ctx):
    await asyncio.sleep(0)            # an async DB session would await its connection here
    token = SESSION.set(f"session-for-{{ctx.id}}")
    try:
        yield
    finally:
        SESSION.reset(token)

@hub.task
async def uses_session():
    await asyncio.sleep(0)
    return SESSION.get()

@hub.task
def sync_task():
    return "never"
'''


@pytest.mark.parametrize("pool", POOLS)
def test_an_async_around_task_hook_wraps_async_tasks_on_every_pool(tmp_path: Path,
                                                                   pool: str) -> None:
    with scratch_app(tmp_path, ASYNC_HOOK, prefix="asynchook") as app, \
            running_worker(app, pool):
        result = app.uses_session.delay()
        assert result.get(timeout=30) == f"session-for-{result.id}"
        plain = app.sync_task.delay()
        with pytest.raises(TaskFailed, match="returned an async context manager, which only "
                                             "async def tasks can enter"):
            plain.get(timeout=30)


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_the_worker_command_exits_with_one_line_naming_the_failing_hook(tmp_path: Path,
                                                                       pool: str) -> None:
    (tmp_path / "brokenapp.py").write_text(BROKEN_START.format(url=f"sqlite:///{tmp_path}/b.db"))
    run = subprocess.run([sys.executable, "-m", "hubbub", "worker", "-A", "brokenapp:hub",
                          "--pool", pool, "-c", "1"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    [line] = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert line.endswith("on_process_start hook brokenapp.connect_database failed: "
                         "ConnectionRefusedError: database at 127.0.0.1:1 refused; this "
                         "process runs no task without it")
