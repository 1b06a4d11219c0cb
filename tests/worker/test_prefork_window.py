"""Prefork's window: jobs queued in a child behind the one it runs, while its tasks are short.

Every test starts its own pool and kills only the children that pool started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from hubbub.job import Crashed, Job, Succeeded, Terminated, TimedOut
from hubbub.worker.pools import _children
from hubbub.worker.pools.prefork import PreforkPool
from tests.worker.child_app import child_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModuleType]:
    with child_app(tmp_path) as module:
        yield module


@pytest.fixture
def queues(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks count as short for 30 s, so that jobs handed out together queue in one child
    even when a loaded machine stalls this process between two of them for over 10 ms."""
    monkeypatch.setattr(_children, "WINDOW_SHORT", 30.0)


def job(app: ModuleType, name: str, *args: object, timeout: float | None = None) -> Job:
    return Job(f"{name}-{time.monotonic_ns()}", getattr(app, name).name, args, {},
               timeout=timeout)


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


async def warm(pool: PreforkPool, app: ModuleType) -> None:
    """Run a short task on every child, so that each is known to run short tasks."""
    for _ in pool.children.pids:
        outcomes = await asyncio.gather(*(pool.run(job(app, "add", 1, 1))
                                          for _ in pool.children.pids))
        assert all(isinstance(o, Succeeded) for o in outcomes)


async def test_a_child_gets_queued_jobs_only_once_its_tasks_are_known_to_be_short(
        app: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Short: under 0.5 s here, so that a loaded machine's stall does not make add look long.
    monkeypatch.setattr(_children, "WINDOW_SHORT", 0.5)
    pool = PreforkPool(2, window=3)
    await pool.start(app.hub)
    try:
        assert pool.window == 0  # nothing run yet: no job may wait behind an unknown task
        await warm(pool, app)
        assert pool.window == 6
        marker = tmp_path / "long"
        long = asyncio.ensure_future(pool.run(job(app, "wait_for_file", str(marker), 30.0)))
        await until(lambda: Path(f"{marker}.pid").exists(), "the long task started")
        # Once it has run past WINDOW_SHORT, its child takes no queued job any more.
        await until(lambda: pool.window == 3, "the busy child left the window")
        Path(f"{marker}.go").touch()
        assert await long == Succeeded("done", (await long).duration)
    finally:
        await pool.stop()


async def test_a_window_holds_about_window_short_of_work_so_no_ops_fill_it_and_slow_tasks_do_not(
        app: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    # Short: under 2 s here. A 0.3 s task makes a window of about 2 s / 0.3 s, however loaded
    # the machine (a slower run only makes it smaller); a no-op's is the cap.
    monkeypatch.setattr(_children, "WINDOW_SHORT", 2.0)
    pool = PreforkPool(1, window=20)
    await pool.start(app.hub)
    try:
        assert isinstance(await pool.run(job(app, "nap", 0.3)), Succeeded)
        assert 1 <= pool.window <= 6
        assert isinstance(await pool.run(job(app, "add", 1, 1)), Succeeded)
        assert pool.window == 20
    finally:
        await pool.stop()


async def test_a_window_grows_over_several_short_replies_not_at_the_first(
        app: ModuleType) -> None:
    # One instant reply (an unknown task, an early failure) could come before a long task:
    # the window starts at one job and grows as short replies keep coming.
    pool = PreforkPool(1, window=64)
    await pool.start(app.hub)
    try:
        assert isinstance(await pool.run(job(app, "add", 1, 1)), Succeeded)
        assert pool.window <= 2  # 64 if that one reply sized it alone
        for _ in range(30):
            assert isinstance(await pool.run(job(app, "add", 1, 1)), Succeeded)
        assert pool.window > 8  # 8 or less only if `add` took over a millisecond
    finally:
        await pool.stop()


async def test_submit_hands_a_job_to_a_child_with_room_and_declines_when_none_has_any(
        app: ModuleType, tmp_path: Path) -> None:
    pool = PreforkPool(1, window=0)
    await pool.start(app.hub)
    try:
        marker = tmp_path / "long"
        first = pool.submit(job(app, "wait_for_file", str(marker), 30.0))
        assert first is not None
        # The only child runs it: the next job is declined (the worker then awaits run).
        assert pool.submit(job(app, "add", 1, 1)) is None
        await until(lambda: Path(f"{marker}.pid").exists(), "the long task started")
        Path(f"{marker}.go").touch()
        assert isinstance(await first, Succeeded)
        second = pool.submit(job(app, "add", 1, 1))
        assert second is not None
        assert await second == Succeeded(2, (await second).duration)
    finally:
        await pool.stop()


@pytest.mark.usefixtures("queues")
async def test_queued_jobs_of_a_child_killed_mid_task_run_elsewhere_and_only_it_crashes(
        app: ModuleType, tmp_path: Path) -> None:
    pool = PreforkPool(1, window=3)
    await pool.start(app.hub)
    try:
        await warm(pool, app)
        marker = tmp_path / "victim"
        # Handed out in one turn of the loop: the first runs, the other three queue behind it.
        running = asyncio.ensure_future(pool.run(job(app, "wait_for_file", str(marker), 30.0)))
        queued = [asyncio.ensure_future(pool.run(job(app, "pid"))) for _ in range(3)]
        await asyncio.sleep(0)
        [child] = pool.children._active
        assert len(child.pending) == 4
        await until(lambda: Path(f"{marker}.pid").exists()  # created, then written: wait
                    and Path(f"{marker}.pid").read_text().strip() != "", "the first task started")
        victim = int(Path(f"{marker}.pid").read_text())
        os.kill(victim, signal.SIGKILL)  # the child this test's pool started
        outcome = await asyncio.wait_for(running, 30)
        assert isinstance(outcome, Crashed)
        assert "SIGKILL" in outcome.reason
        others = await asyncio.wait_for(asyncio.gather(*queued), 30)
        # None lost, none crashed with it: each ran once, in the replacement child.
        assert all(isinstance(o, Succeeded) for o in others)
        assert {o.value for o in others if isinstance(o, Succeeded)} == set(pool.children.pids)
        assert victim not in pool.children.pids
        assert pool.children.started == 2
    finally:
        await pool.stop()


@pytest.mark.usefixtures("queues")
async def test_a_queued_job_terminated_before_it_starts_is_skipped_without_a_kill(
        app: ModuleType, tmp_path: Path) -> None:
    pool = PreforkPool(1, window=3)
    await pool.start(app.hub)
    try:
        await warm(pool, app)
        marker = tmp_path / "first"
        first = asyncio.ensure_future(pool.run(job(app, "wait_for_file", str(marker), 30.0)))
        doomed = job(app, "pid")
        second = asyncio.ensure_future(pool.run(doomed))
        after = asyncio.ensure_future(pool.run(job(app, "pid")))
        await asyncio.sleep(0)
        [child] = pool.children._active
        assert [p.queued for p in child.pending.values()] == [False, True, True]
        await until(lambda: Path(f"{marker}.pid").exists()  # created, then written: wait
                    and Path(f"{marker}.pid").read_text().strip() != "", "the first task started")
        cancelling = asyncio.ensure_future(pool.cancel(doomed.id, "revoked by a test"))
        await asyncio.sleep(0)  # the Cancel is written before the first task may end
        Path(f"{marker}.go").touch()
        assert await asyncio.wait_for(cancelling, 30) is True
        assert isinstance(await first, Succeeded)
        outcome = await second
        assert isinstance(outcome, Terminated)
        assert outcome.reason == "revoked by a test"
        served = await after
        assert isinstance(served, Succeeded)
        assert served.value == int(Path(f"{marker}.pid").read_text())  # the same child
        assert pool.children.started == 1
    finally:
        await pool.stop()


@pytest.mark.usefixtures("queues")
async def test_a_queued_jobs_hard_limit_counts_from_when_it_starts(
        app: ModuleType, tmp_path: Path) -> None:
    pool = PreforkPool(1, window=3)
    await pool.start(app.hub)
    try:
        await warm(pool, app)
        ahead = asyncio.ensure_future(pool.run(job(app, "nap", 0.8)))
        # forever has a 0.5 s hard limit: queued 0.8 s behind the nap, it must still get it.
        limited = asyncio.ensure_future(pool.run(job(app, "forever", str(tmp_path / "f"),
                                                     timeout=0.5)))
        assert isinstance(await ahead, Succeeded)
        outcome = await asyncio.wait_for(limited, 30)
        assert isinstance(outcome, TimedOut)
        assert Path(tmp_path / "f").exists()  # it did start, and ran until its limit
    finally:
        await pool.stop()


async def test_children_beyond_the_cpu_count_start_only_when_work_needs_them(
        app: ModuleType, tmp_path: Path) -> None:
    cpus = os.cpu_count() or 1
    pool = PreforkPool(cpus + 1, window=0)
    await pool.start(app.hub)
    try:
        assert len(pool.children.pids) == cpus  # not cpus + 1 interpreters before any work
        assert pool.concurrency == cpus + 1
        markers = [tmp_path / f"busy{i}" for i in range(cpus + 1)]
        busy = [asyncio.ensure_future(pool.run(job(app, "wait_for_file", str(m), 30.0)))
                for m in markers]
        # Every started child is busy: the last job starts the child it needs.
        await until(lambda: all(Path(f"{m}.pid").exists() for m in markers),
                    "every job started, each in a child of its own", timeout=30)
        assert len({Path(f"{m}.pid").read_text() for m in markers}) == cpus + 1
        assert len(pool.children.pids) == cpus + 1
        for marker in markers:
            Path(f"{marker}.go").touch()
        assert all(isinstance(o, Succeeded) for o in await asyncio.gather(*busy))
    finally:
        await pool.stop()
