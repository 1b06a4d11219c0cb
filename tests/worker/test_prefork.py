"""The prefork pool with real child processes: tasks, limits, recycling, start and stop."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from hubbub import Hub, TaskCrashed, TaskFailed
from hubbub.errors import ConfigurationError
from hubbub.job import Crashed, Job, Succeeded
from hubbub.testing import drain
from hubbub.worker.pools import make_pool
from hubbub.worker.pools.prefork import PreforkPool
from tests.worker.child_app import child_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModuleType]:
    with child_app(tmp_path) as module:
        yield module


def job(app: ModuleType, name: str, *args: object, **options: object) -> Job:
    return Job(f"{name}-{time.monotonic_ns()}", getattr(app, name).name, args, {},
               **options)  # type: ignore[arg-type]


def test_sync_and_async_tasks_run_in_child_processes(app: ModuleType) -> None:
    sums = app.add.delay_many([(i, i) for i in range(20)])
    doubled = app.double.delay(21)
    pids = [app.pid.delay() for _ in range(4)] + [app.async_pid.delay()]
    drain(app.hub, pool=PreforkPool(2), timeout=30)
    assert [r.get(timeout=5) for r in sums] == [2 * i for i in range(20)]
    assert doubled.get(timeout=5) == 42
    assert os.getpid() not in {r.get(timeout=5) for r in pids}


def test_soft_time_limit_interrupts_the_task_inside_its_child(app: ModuleType) -> None:
    result = app.soft_in_c_call.delay()
    started = time.monotonic()
    drain(app.hub, pool=PreforkPool(1), timeout=30)
    assert result.get(timeout=5) == "cleaned up"
    assert time.monotonic() - started < 5  # not the 8 s the task asked to sleep


def test_hard_time_limit_kills_the_child_at_the_limit(app: ModuleType, tmp_path: Path) -> None:
    marker = tmp_path / "forever.pid"
    stuck = app.forever.delay(str(marker))
    after = app.pid.delay()
    drain(app.hub, pool=PreforkPool(1), timeout=30)
    with pytest.raises(TaskFailed) as info:
        stuck.get(timeout=5)
    assert info.value.type == "TaskTimedOut"
    assert "0.5s" in info.value.message
    record = app.hub.bridge.run(app.hub.read_results([stuck.id]))[stuck.id]
    assert 0.5 <= record.finished_at - record.started_at < 1.5
    assert after.get(timeout=5) != int(marker.read_text())  # served by a fresh child


def test_children_are_replaced_after_max_tasks_per_child(app: ModuleType) -> None:
    results = [app.pid.delay() for _ in range(9)]
    pool = PreforkPool(1, max_tasks_per_child=3)
    drain(app.hub, pool=pool, timeout=30)
    pids = [r.get(timeout=5) for r in results]
    assert sorted(Counter(pids).values()) == [3, 3, 3]
    assert pids == sorted(pids, key=pids.index)  # each child served three in a row
    assert pool.children.started == 4  # the one serving when the queue ran dry is the fourth


def test_a_child_over_max_memory_is_replaced_after_its_task(app: ModuleType) -> None:
    before = app.pid.delay()
    grown = app.grow.delay(120)
    after = app.pid.delay()
    drain(app.hub, pool=PreforkPool(1, max_memory_per_child=100), timeout=30)
    # The parent also reads a busy child's memory: on a loaded machine it may catch the
    # child while the task is still filling its 120 MiB and kill it then. Either way the
    # child that grew runs nothing more.
    grew = grown.get(timeout=5, propagate=False)
    if isinstance(grew, TaskCrashed):
        assert "max-memory-per-child" in str(grew)
    else:
        assert before.get(timeout=5) == grew  # a fresh child is under 100 MiB
    assert after.get(timeout=5) != before.get(timeout=5)


async def test_children_ignore_sigint_so_ctrl_c_reaches_only_the_worker(
    app: ModuleType,
) -> None:
    pool = PreforkPool(1)
    await pool.start(app.hub)
    try:
        [pid] = pool.children.pids
        os.kill(pid, signal.SIGINT)  # the child this test's pool started
        outcome = await pool.run(job(app, "pid"))
        assert outcome == Succeeded(pid, outcome.duration)
    finally:
        await pool.stop()


async def test_a_hub_without_import_path_needs_one_given_to_the_pool(
    app: ModuleType, tmp_path: Path
) -> None:
    bare = Hub(f"sqlite:///{tmp_path / 'bare.db'}")
    try:
        with pytest.raises(ConfigurationError, match="-A module:attr"):
            await PreforkPool(1).start(bare)
        pool = PreforkPool(1, import_path=app.hub.import_path)
        await pool.start(bare)
        try:
            outcome = await pool.run(job(app, "add", 2, 3))
            assert isinstance(outcome, Succeeded)
            assert outcome.value == 5
        finally:
            await pool.stop()
    finally:
        bare.close()


async def test_a_child_that_cannot_import_the_app_fails_the_start_clearly(
    app: ModuleType,
) -> None:
    pool = PreforkPool(2, import_path="no_such_module_here:hub")
    with pytest.raises(ConfigurationError, match="could not load no_such_module_here:hub"):
        await pool.start(app.hub)


async def test_stop_ends_a_busy_child_in_bounded_time(app: ModuleType, tmp_path: Path) -> None:
    pool = PreforkPool(1)
    await pool.start(app.hub)
    marker = tmp_path / "busy"
    running = asyncio.ensure_future(pool.run(job(app, "wait_for_file", str(marker), 30.0)))
    deadline = time.monotonic() + 20
    while not Path(f"{marker}.pid").exists():
        assert time.monotonic() < deadline, "the task never started"
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await pool.stop()
    assert time.monotonic() - started < 5
    outcome = await asyncio.wait_for(running, 5)
    assert isinstance(outcome, Crashed)
    assert "the pool stopped" in outcome.reason


def test_make_pool_passes_child_options_and_refuses_them_elsewhere() -> None:
    pool = make_pool("prefork", 3, max_tasks_per_child=5, max_memory_per_child=None)
    assert isinstance(pool, PreforkPool)
    assert (pool.concurrency, pool.children.max_tasks_per_child) == (3, 5)
    assert make_pool("prefork").concurrency == (os.cpu_count() or 1)
    with pytest.raises(ConfigurationError, match="--max-tasks-per-child does not apply"):
        make_pool("threads", max_tasks_per_child=5)
    with pytest.raises(ConfigurationError, match="at least 1"):
        make_pool("prefork", 2, max_tasks_per_child=0)


async def test_resize_starts_and_stops_children_for_autoscale(app: ModuleType) -> None:
    pool = PreforkPool(1)
    await pool.start(app.hub)
    try:
        first = pool.children.pids
        await pool.resize(3)
        assert pool.concurrency == 3
        assert len(pool.children.pids) == 3
        assert set(first) <= set(pool.children.pids)
        await pool.resize(1)
        assert len(pool.children.pids) == 1
        outcome = await pool.run(job(app, "double", 4))
        assert isinstance(outcome, Succeeded)
        assert outcome.value == 8
    finally:
        await pool.stop()
