"""The hybrid pool: processes x coroutines, sync and async tasks, limits, recycling."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from hubbub import TaskFailed, WorkerLoop, run_worker
from hubbub.testing import drain
from hubbub.worker.pools import make_pool
from hubbub.worker.pools.hybrid import HybridPool
from tests.worker.child_app import child_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModuleType]:
    with child_app(tmp_path) as module:
        yield module


def test_sync_and_async_tasks_run_concurrently_in_each_child(app: ModuleType) -> None:
    pool = HybridPool(2, coroutines=10)
    assert pool.concurrency == 20
    naps = [app.async_nap.delay(0.5) for _ in range(16)] + [app.nap.delay(0.5) for _ in range(4)]
    sums = app.add.delay_many([(i, i) for i in range(10)])
    doubled = app.double.delay(4)
    started = time.monotonic()
    drain(app.hub, pool=pool, timeout=30)
    assert time.monotonic() - started < 5  # 20 half-second naps at once, not one by one
    pids = {r.get(timeout=5) for r in naps}
    assert len(pids) == 2
    assert os.getpid() not in pids
    assert [r.get(timeout=5) for r in sums] == [2 * i for i in range(10)]
    assert doubled.get(timeout=5) == 8


def test_a_hard_limit_is_kept_inside_the_child_when_the_task_cooperates(
    app: ModuleType,
) -> None:
    late = app.overslept.delay()
    before, after = app.async_pid.delay(), None
    pool = HybridPool(1, coroutines=4)
    drain(app.hub, pool=pool, timeout=30)
    after = app.async_pid.delay()
    drain(app.hub, pool=pool, timeout=30)
    with pytest.raises(TaskFailed) as info:
        late.get(timeout=5)
    assert info.value.type == "TaskTimedOut"
    assert pool.children.started == 2  # one per drain: no child was killed
    assert before.get(timeout=5) != after.get(timeout=5)


def test_a_sync_tasks_hard_limit_is_kept_in_its_childs_thread(app: ModuleType,
                                                             tmp_path: Path) -> None:
    stuck = app.forever.delay(str(tmp_path / "forever.pid"))
    sums = app.add.delay_many([(i, 1) for i in range(20)])
    pool = HybridPool(1, coroutines=4)
    drain(app.hub, pool=pool, timeout=30)
    with pytest.raises(TaskFailed) as info:
        stuck.get(timeout=5)
    assert info.value.type == "TaskTimedOut"
    assert pool.children.started == 1  # raised in the thread: no child was killed
    assert [r.get(timeout=5) for r in sums] == [i + 1 for i in range(20)]


def test_blocking_sync_tasks_of_one_child_run_at_once(app: ModuleType) -> None:
    naps = [app.nap_span.delay(0.5) for _ in range(8)]
    drain(app.hub, pool=HybridPool(1, coroutines=8), timeout=30)
    spans = [r.get(timeout=5) for r in naps]
    assert len({pid for pid, _, _ in spans}) == 1
    assert max(start for _, start, _ in spans) < min(end for _, _, end in spans)  # overlap


def test_a_task_blocking_its_childs_loop_past_the_limit_gets_the_child_killed(
    app: ModuleType,
) -> None:
    hog = app.hogs_the_loop.delay()
    neighbour = app.async_nap.delay(20)
    after = app.add.delay_many([(i, 1) for i in range(10)])
    pool = HybridPool(1, coroutines=2, block_warning=None)  # the hog and its neighbour
    started = time.monotonic()
    drain(app.hub, pool=pool, timeout=30)
    assert time.monotonic() - started < 10
    with pytest.raises(TaskFailed) as info:
        hog.get(timeout=5)
    assert info.value.type == "TaskTimedOut"
    with pytest.raises(TaskFailed) as info:
        neighbour.get(timeout=5)
    assert info.value.type == "TaskCrashed"
    assert f"{app.hogs_the_loop.name}[{hog.id}]" in info.value.message
    assert "ran past its hard time limit" in info.value.message
    assert [r.get(timeout=5) for r in after] == [i + 1 for i in range(10)]


def test_children_are_recycled_between_tasks_by_count(app: ModuleType) -> None:
    results = [app.async_pid.delay() for _ in range(12)]
    pool = HybridPool(1, coroutines=2, max_tasks_per_child=4)
    drain(app.hub, pool=pool, timeout=30)
    pids = [r.get(timeout=5) for r in results]
    assert len(set(pids)) >= 3
    assert all(pids.count(p) <= 4 for p in pids)


def test_make_pool_reads_coroutines_and_processes() -> None:
    pool = make_pool("hybrid", 3, coroutines=7)
    assert isinstance(pool, HybridPool)
    assert (pool.processes, pool.coroutines, pool.concurrency) == (3, 7, 21)
    with pytest.raises(Exception, match="--coroutines does not apply to the prefork pool"):
        make_pool("prefork", 2, coroutines=7)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_hybrid_children_run_the_event_loop_their_worker_runs(app: ModuleType, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")  # in the test extra: CI runs this
    kinds = [app.loop_kind.delay() for _ in range(4)]
    worker = WorkerLoop(app.hub, pool=HybridPool(1, coroutines=4), stop_when_idle=True)
    run_worker(worker, loop=loop)
    expected = "uvloop" if loop == "uvloop" else "asyncio.unix_events"
    assert {r.get(timeout=5) for r in kinds} == {expected}

