"""The gevent pool: monkey-patched children run blocking sync tasks as greenlets, and async
tasks on loops of their own."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from hubbub import TaskFailed
from hubbub.testing import drain
from hubbub.worker.pools import make_pool
from hubbub.worker.pools.gevent import GeventPool  # importable without gevent; not usable
from tests.worker.child_app import child_app

pytest.importorskip("gevent")


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one moment."""
    edges = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModuleType]:
    with child_app(tmp_path) as module:
        yield module


def test_blocking_sync_tasks_run_concurrently_as_greenlets(app: ModuleType) -> None:
    naps = [app.nap_span.delay(0.5) for _ in range(40)]
    sums = app.add.delay_many([(i, i) for i in range(10)])
    drain(app.hub, pool=GeventPool(50), timeout=30)
    spans = [r.get(timeout=5) for r in naps]
    pids = {pid for pid, _, _ in spans}
    assert len(pids) == 1
    assert os.getpid() not in pids
    # The naps slept side by side in one process (one after another, none would overlap):
    # judged from when each began and ended, not from the wall time of a loaded machine.
    assert most_at_once([(began, ended) for _, began, ended in spans]) >= 10
    assert [r.get(timeout=5) for r in sums] == [2 * i for i in range(10)]


def test_async_tasks_run_next_to_greenlets(app: ModuleType) -> None:
    doubled = [app.double.delay(i) for i in range(10)]
    naps = [app.async_nap.delay(0.5) for _ in range(8)]
    started = time.monotonic()
    drain(app.hub, pool=GeventPool(20), timeout=30)
    assert time.monotonic() - started < 6
    assert [r.get(timeout=5) for r in doubled] == [2 * i for i in range(10)]
    assert len({r.get(timeout=5) for r in naps}) == 1


def test_soft_and_hard_limits_land_at_the_next_yield(app: ModuleType) -> None:
    soft = app.soft_in_c_call.delay()  # time.sleep yields under gevent: the soft limit lands
    late = app.overslept.delay()
    pool = GeventPool(4)
    drain(app.hub, pool=pool, timeout=30)
    assert soft.get(timeout=5) == "cleaned up"
    with pytest.raises(TaskFailed) as info:
        late.get(timeout=5)
    assert info.value.type == "TaskTimedOut"
    assert pool.children.started == 1  # kept inside the child; nothing was killed


def test_a_crashing_task_takes_only_its_child(app: ModuleType) -> None:
    crash = app.segfault.delay()
    pool = GeventPool(1)
    drain(app.hub, pool=pool, timeout=30)
    after = app.add.delay(1, 2)
    drain(app.hub, pool=pool, timeout=30)
    with pytest.raises(TaskFailed, match="died with signal SIGSEGV"):
        crash.get(timeout=5)
    assert after.get(timeout=5) == 3


def test_make_pool_counts_greenlets() -> None:
    pool = make_pool("gevent", 30)
    assert isinstance(pool, GeventPool)
    assert (pool.greenlets, pool.processes, pool.concurrency) == (30, 1, 30)
