"""``revoke(terminate=True)`` stops a running task, on every pool.

The worker notices the revoke (it polls the result store for the ids it holds) and calls
``Pool.cancel``; the pool stops the task and its ``run`` returns ``Terminated``, which ends
REVOKED. In-process pools cancel the coroutine or raise in the task's thread; prefork kills
the child and replaces it; hybrid and gevent ask their child (a ``Cancel`` frame) and kill it
if the task has not ended a second later.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hubbub import Hub, State, TaskRevoked
from hubbub.job import Crashed, Job, Outcome, Succeeded, Terminated
from hubbub.worker.execute import Running, Stoppable
from hubbub.worker.pools import make_pool
from hubbub.worker.pools._wire import FRAME, Cancel, decode, encode
from hubbub.worker.pools.base import Pool
from tests.worker.scratch import running_worker, scratch_app, wait_until

POOLS = ["solo", "threads", "async", "prefork", "hybrid", "gevent"]
PROCESS_POOLS = ["prefork", "hybrid", "gevent"]
IN_PROCESS_POOLS = ["solo", "threads", "async"]

SOURCE = textwrap.dedent('''
    import asyncio, os, time
    from pathlib import Path
    from hubbub import Hub

    hub = Hub({url!r}, lease=5)

    def started(marker: str) -> None:
        Path(marker + ".pid").write_text(str(os.getpid()))

    @hub.task
    def long_sync(marker: str) -> str:
        started(marker)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    time.sleep(0.02)
                except Exception:  # a terminate is not an Exception: it still stops
                    pass
            return "ran to the end"
        finally:
            Path(marker + ".end").write_text("stopped")

    @hub.task
    async def long_async(marker: str) -> str:
        started(marker)
        try:
            await asyncio.sleep(60)
            return "ran to the end"
        finally:
            Path(marker + ".end").write_text("stopped")

    @hub.task
    async def blocks_its_loop(marker: str) -> str:
        started(marker)
        time.sleep(60)  # no await: only killing its process stops it
        return "ran to the end"

    @hub.task
    def quick(x: int) -> int:
        return x

    @hub.task
    def pid() -> int:
        return os.getpid()
''')


def terminate_app(folder: Path) -> AbstractContextManager[ModuleType]:
    return scratch_app(folder, SOURCE, "termapp")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def skip_without_gevent(pool: str) -> None:
    if pool == "gevent":
        pytest.importorskip("gevent")


# -- with a real worker ----------------------------------------------------------------------

@pytest.mark.parametrize("task", ["long_sync", "long_async"])
@pytest.mark.parametrize("pool", POOLS)
def test_a_running_task_revoked_with_terminate_stops_and_ends_revoked(
        tmp_path: Path, pool: str, task: str) -> None:
    skip_without_gevent(pool)
    marker = str(tmp_path / "long")
    with terminate_app(tmp_path) as app, running_worker(app, pool):
        running = getattr(app, task).delay(marker)
        # the task creates its pid file, then writes it: wait for the pid, not the file
        wait_until(lambda: running.state == State.STARTED and _pid_written(marker),
                   "the long task started")
        ran_in = int(Path(marker + ".pid").read_text())
        asked = time.monotonic()
        assert running.revoke(terminate=True) is True
        with pytest.raises(TaskRevoked, match="terminate"):
            running.get(timeout=10)
        wait_until(lambda: held_nothing(app), "the terminated task's delivery acked", 10)
        assert time.monotonic() - asked < 8
        if pool == "prefork":
            wait_until(lambda: gone(ran_in), "the child that ran it gone", 10)
        else:  # it was stopped where it ran, which cleaned up
            wait_until(lambda: Path(marker + ".end").exists(), "the task stopped", 10)
        assert running.state == State.REVOKED
        after = app.pid.delay()
        served_by = after.get(timeout=30)
        if pool == "prefork":
            assert served_by != ran_in  # the child was replaced
        assert app.quick.delay(7).get(timeout=30) == 7


def held_nothing(app: ModuleType) -> bool:
    async def read() -> int:
        client = await app.hub.client()
        return sum(s.leased for s in await client.transport.stats(["default"]))

    count: int = app.hub.bridge.run(read())
    return count == 0


# -- Pool.cancel, called directly ------------------------------------------------------------

@contextmanager
def started_pool(app: ModuleType, pool: str, **options: Any) -> Iterator[tuple[Pool, Runner]]:
    """A started pool of one slot and a loop of its own to drive it from the test."""
    skip_without_gevent(pool)
    if pool in PROCESS_POOLS:
        options["import_path"] = app.hub.import_path
    if pool == "hybrid":
        options.setdefault("coroutines", 1)
    instance = make_pool(pool, 1, **options)
    runner = Runner()
    try:
        runner.call(instance.start(app.hub))
        yield instance, runner
    finally:
        runner.call(instance.stop())
        runner.close()


class Runner:
    """An event loop on a thread: the pool lives there, the test submits to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


def job_of(app: ModuleType, task: str, *args: Any, job_id: str = "job-1") -> Job:
    return Job(job_id, getattr(app, task).name, args, {})


def run_and_terminate(pool: Pool, runner: Runner, job: Job,
                      marker: str) -> tuple[bool, Outcome, float]:
    running = runner.submit(pool.run(job))
    wait_until(lambda: Path(marker + ".pid").exists(), "the job started", 20)
    asked = time.monotonic()
    stopped = runner.call(pool.cancel(job.id, "revoked with terminate=True"))
    outcome = running.result(15)
    return stopped, outcome, time.monotonic() - asked


@pytest.mark.parametrize("task", ["long_sync", "long_async"])
@pytest.mark.parametrize("pool", POOLS)
def test_cancel_makes_run_return_terminated_and_the_pool_serves_on(
        tmp_path: Path, pool: str, task: str) -> None:
    marker = str(tmp_path / "long")
    with terminate_app(tmp_path) as app, started_pool(app, pool) as (instance, runner):
        stopped, outcome, took = run_and_terminate(instance, runner,
                                                   job_of(app, task, marker), marker)
        assert stopped is True
        assert isinstance(outcome, Terminated)
        assert outcome.reason == "revoked with terminate=True"
        assert took < 5
        after = runner.call(instance.run(job_of(app, "quick", 3, job_id="job-2")))
        assert isinstance(after, Succeeded)
        assert after.value == 3


@pytest.mark.parametrize("pool", POOLS)
def test_cancel_of_a_job_that_is_not_running_here_returns_false(tmp_path: Path,
                                                                pool: str) -> None:
    with terminate_app(tmp_path) as app, started_pool(app, pool) as (instance, runner):
        assert runner.call(instance.cancel("nobody", "revoked")) is False
        outcome = runner.call(instance.run(job_of(app, "quick", 5)))
        assert isinstance(outcome, Succeeded)
        assert runner.call(instance.cancel("job-1", "revoked")) is False  # it has ended


def test_prefork_replaces_the_child_it_killed_to_terminate(tmp_path: Path) -> None:
    marker = str(tmp_path / "long")
    with terminate_app(tmp_path) as app, started_pool(app, "prefork") as (instance, runner):
        stopped, outcome, _ = run_and_terminate(instance, runner,
                                                job_of(app, "long_sync", marker), marker)
        assert stopped is True
        assert isinstance(outcome, Terminated)  # not Crashed, although its child was killed
        killed = int(Path(marker + ".pid").read_text())
        wait_until(lambda: gone(killed), "the child is gone", 10)
        served = runner.call(instance.run(job_of(app, "pid", job_id="job-2")))
        assert isinstance(served, Succeeded)
        assert served.value != killed


@pytest.mark.parametrize("pool", ["hybrid", "gevent"])
def test_a_task_that_does_not_stop_gets_its_child_killed_a_second_later(
        tmp_path: Path, pool: str) -> None:
    marker = str(tmp_path / "long")
    with terminate_app(tmp_path) as app, started_pool(app, pool) as (instance, runner):
        # hybrid: an async def task that blocks its child's loop cannot be cancelled;
        # gevent: it never yields to the hub, which would throw into it.
        stopped, outcome, took = run_and_terminate(
            instance, runner, job_of(app, "blocks_its_loop", marker), marker)
        assert stopped is True
        assert isinstance(outcome, Terminated)
        assert 0.8 < took < 8
        killed = int(Path(marker + ".pid").read_text())
        wait_until(lambda: gone(killed), "the child is gone", 10)
        served = runner.call(instance.run(job_of(app, "pid", job_id="job-2")))
        assert isinstance(served, Succeeded)
        assert served.value != killed


def test_a_neighbour_of_a_task_that_does_not_stop_crashes_naming_it(tmp_path: Path) -> None:
    marker = str(tmp_path / "long")
    with terminate_app(tmp_path) as app, \
            started_pool(app, "hybrid", coroutines=2) as (instance, runner):
        neighbour = runner.submit(instance.run(job_of(app, "long_async", str(tmp_path / "n"),
                                                      job_id="neighbour")))
        wait_until(lambda: Path(str(tmp_path / "n") + ".pid").exists(), "the neighbour ran")
        stopped, outcome, _ = run_and_terminate(
            instance, runner, job_of(app, "blocks_its_loop", marker), marker)
        assert stopped is True
        assert isinstance(outcome, Terminated)
        crashed = neighbour.result(15)
        assert isinstance(crashed, Crashed)
        assert "was terminated and did not stop" in crashed.reason
        assert app.blocks_its_loop.name in crashed.reason


@pytest.mark.parametrize("pool", IN_PROCESS_POOLS)
def test_a_terminate_that_comes_after_the_job_ended_leaves_its_outcome(hub: Hub,
                                                                       pool: str) -> None:
    @hub.task(name="ends")
    def ends() -> str:
        return "finished"

    instance = make_pool(pool, 1)
    runner = Runner()
    try:
        runner.call(instance.start(hub))
        outcome = runner.call(instance.run(Job("job-1", "ends", (), {})))
        assert outcome == Succeeded("finished", outcome.duration)
        assert runner.call(instance.cancel("job-1", "too late")) is False
    finally:
        runner.call(instance.stop())
        runner.close()


# -- the race, and the frame -----------------------------------------------------------------

def test_the_first_of_a_terminate_and_the_end_wins_and_only_once() -> None:
    job = Job("job-1", "t", (), {})
    stopped: list[str] = []
    first = Stoppable(job)
    first.arm(stopped.append)
    assert first.terminate("revoked") is True
    assert first.terminate("again") is True  # still the terminate's: stopped once
    assert first.end() is True
    assert stopped == ["revoked"]
    assert first.outcome().reason == "revoked"

    second = Stoppable(job)
    second.arm(stopped.append)
    assert second.end() is False
    assert second.terminate("late") is False
    assert stopped == ["revoked"]


def test_a_terminate_before_the_job_is_armed_stops_it_once_armed() -> None:
    stop = Stoppable(Job("job-1", "t", (), {}))
    assert stop.terminate("early") is True
    stopped: list[str] = []
    stop.arm(stopped.append)
    assert stopped == ["early"]


def test_running_finds_every_job_with_an_id_and_forgets_ended_ones() -> None:
    running = Running()
    job = Job("job-1", "t", (), {})
    one, two = running.add(job), running.add(job)
    assert running.terminate("job-1", "revoked") is True
    assert one.terminated
    assert two.terminated
    running.remove(one)
    running.remove(two)
    assert running.terminate("job-1", "revoked") is False


def test_the_cancel_frame_survives_its_trip_over_the_wire() -> None:
    data = encode(Cancel(7, "revoked with terminate=True"))
    assert decode(data[FRAME.size:]) == Cancel(7, "revoked with terminate=True")


@pytest.mark.parametrize("pool", IN_PROCESS_POOLS)
def test_a_terminate_racing_the_end_of_a_job_gives_it_one_outcome_agreeing_with_cancel(
        hub: Hub, pool: str) -> None:
    @hub.task(name="brief")
    def brief(n: int) -> int:
        total = 0
        for i in range(n):  # Python instructions, where a terminate can land
            total += i
        return total

    @hub.task(name="abrief")
    async def abrief(n: int) -> int:
        for _ in range(n):
            await asyncio.sleep(0)
        return n

    instance = make_pool(pool, 1)
    runner = Runner()

    async def race(name: str, n: int, job_id: str, delay: int) -> tuple[bool, Outcome]:
        running = asyncio.ensure_future(instance.run(Job(job_id, name, (n,), {})))
        for _ in range(delay):
            await asyncio.sleep(0)
        stopped = await instance.cancel(job_id, "revoked")
        return stopped, await running

    try:
        runner.call(instance.start(hub))
        for i in range(60):
            name = "brief" if i % 2 else "abrief"
            stopped, outcome = runner.call(race(name, 2000, f"job-{i}", i % 6))
            assert stopped is isinstance(outcome, Terminated), (i, stopped, outcome)
        after = runner.call(instance.run(Job("after", "brief", (10,), {})))
        assert after == Succeeded(45, after.duration)
    finally:
        runner.call(instance.stop())
        runner.close()


def _pid_written(marker: str) -> bool:
    path = Path(marker + ".pid")
    return path.exists() and path.read_text().strip() != ""
