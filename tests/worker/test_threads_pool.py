"""The threads and solo pools on their own, driven on the test's loop: ``submit`` and ``run``,
the concurrency limit, terminating every job with an id, resizing, ``async def`` tasks and
what ``stop`` does to waiting jobs. The worker around them is in test_worker.py,
test_terminate.py and test_lifecycle.py; the threads under them in test_sync_threads.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from hubbub import Hub
from hubbub.job import Job, Succeeded, Terminated
from hubbub.worker.pools.threads import SoloPool, ThreadPool
from tests.worker.spinning import spin_until_interrupted


def job(task: str, *args: Any, job_id: str = "job-id") -> Job:
    return Job(job_id, task, args, {})


class Gauge:
    """Counts the calls running at once and the most seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def __call__(self, body: Callable[[], Any]) -> Any:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return body()
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
async def pool(hub: Hub) -> AsyncIterator[ThreadPool]:
    p = ThreadPool(3)
    await p.start(hub)
    try:
        yield p
    finally:
        await p.stop()


def task_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("hubbub-task_")}


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_every_job_gets_its_own_outcome_by_submit_or_run(hub: Hub,
                                                                 pool: ThreadPool) -> None:
    @hub.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    submitted = [pool.submit(job("double", n)) for n in range(200)]
    ran = await asyncio.gather(*(pool.run(job("double", n)) for n in range(200, 250)))
    outcomes = [*await asyncio.gather(*submitted), *ran]
    assert [o.value for o in outcomes] == [2 * n for n in range(250)]  # type: ignore[union-attr]


async def test_no_more_jobs_run_at_once_than_the_concurrency_and_blocking_ones_spread(
        hub: Hub, pool: ThreadPool) -> None:
    gauge = Gauge()

    @hub.task(name="naps")
    def naps() -> None:
        gauge(lambda: time.sleep(0.02))

    outcomes = await asyncio.gather(*(pool.submit(job("naps")) for _ in range(24)))
    assert all(isinstance(o, Succeeded) for o in outcomes), outcomes
    assert gauge.most == 3


async def test_solo_runs_one_job_at_a_time(hub: Hub) -> None:
    gauge = Gauge()

    @hub.task(name="naps")
    def naps() -> None:
        gauge(lambda: time.sleep(0.005))

    solo = SoloPool()
    await solo.start(hub)
    try:
        outcomes = await asyncio.gather(*(solo.submit(job("naps")) for _ in range(8)))
    finally:
        await solo.stop()
    assert all(isinstance(o, Succeeded) for o in outcomes), outcomes
    assert gauge.most == 1


async def test_a_terminate_stops_every_job_running_with_that_id(hub: Hub,
                                                                pool: ThreadPool) -> None:
    running, seen = threading.Semaphore(0), []

    @hub.task(name="loops")
    def loops() -> None:
        running.release()
        spin_until_interrupted(seen, lambda exc: type(exc).__name__)

    twice = [pool.submit(job("loops", job_id="same")) for _ in range(2)]
    other = pool.submit(job("loops", job_id="other"))
    for _ in range(3):
        await until(lambda: running.acquire(blocking=False))
    assert await pool.cancel("same", "revoked")
    outcomes = [f.result() for f in twice]  # reported at once
    assert all(isinstance(o, Terminated) and o.reason == "revoked" for o in outcomes), outcomes
    assert not other.done()
    assert not await pool.cancel("same", "again")  # reported: nothing left to stop
    assert await pool.cancel("other", "revoked")
    await until(lambda: len(seen) == 3)
    assert seen == ["TerminateRequested"] * 3


async def test_async_def_tasks_run_on_a_loop_of_their_own_in_a_thread(
        hub: Hub, pool: ThreadPool) -> None:
    ours = asyncio.get_running_loop()

    @hub.task(name="where")
    async def where() -> list[Any]:
        await asyncio.sleep(0)
        return [threading.current_thread().name, asyncio.get_running_loop() is ours]

    outcome = await pool.run(job("where"))
    assert isinstance(outcome, Succeeded), outcome
    name, on_ours = outcome.value
    assert name.startswith("hubbub-task_")
    assert not on_ours


async def test_growing_lets_more_jobs_run_at_once_and_shrinking_retires_threads(
        hub: Hub, pool: ThreadPool) -> None:
    before = task_threads()
    barrier = threading.Barrier(5, timeout=10)  # passes only with 5 jobs running at once

    @hub.task(name="meet")
    def meet() -> int:
        return barrier.wait()

    await pool.resize(5)
    outcomes = await asyncio.gather(*(pool.submit(job("meet")) for _ in range(5)))
    assert all(isinstance(o, Succeeded) for o in outcomes), outcomes
    assert len(task_threads() - before) == 5
    await pool.resize(2)
    await until(lambda: len(task_threads() - before) == 2)


async def test_stop_drops_the_jobs_waiting_for_a_thread_and_lets_running_ones_finish(
        hub: Hub) -> None:
    running, release, ran = threading.Event(), threading.Event(), []

    @hub.task(name="holds")
    def holds() -> str:
        running.set()
        release.wait(10)
        return "held"

    @hub.task(name="records")
    def records() -> None:
        ran.append("ran")

    solo = SoloPool()
    await solo.start(hub)
    first = solo.submit(job("holds"))
    await until(running.is_set)
    waiting = solo.submit(job("records"))
    await solo.stop()
    assert waiting.cancelled()
    release.set()
    outcome = await asyncio.wait_for(first, 10)
    assert outcome == Succeeded("held", outcome.duration)
    assert ran == []


async def test_a_caller_that_gives_up_on_a_job_leaves_the_pool_serving(
        hub: Hub, pool: ThreadPool) -> None:
    release = threading.Event()

    @hub.task(name="waits")
    def waits() -> None:
        release.wait(10)

    @hub.task(name="quick")
    def quick() -> str:
        return "quick"

    given_up = asyncio.create_task(pool.run(job("waits")))
    await asyncio.sleep(0.01)
    given_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await given_up
    release.set()
    outcome = await pool.run(job("quick"))
    assert outcome == Succeeded("quick", outcome.duration)


@pytest.mark.parametrize("how", ["terminated", "timed out"])
async def test_stop_after_a_waiting_job_was_reported_drops_only_what_never_ended(
        hub: Hub, how: str) -> None:
    # A job past its hard limit keeps solo's one thread (it sleeps on); the next one waits
    # for it and is reported while it waits. Stopping then must not count it as dropped.
    @hub.task(name="nap")
    def nap(seconds: float) -> None:
        time.sleep(seconds)

    pool = SoloPool()
    await pool.start(hub)
    try:
        stuck = pool.submit(Job("stuck", "nap", (1.0,), {}, timeout=0.1))
        assert stuck is not None
        assert type(await stuck).__name__ == "TimedOut"
        waiting = pool.submit(Job("waiting", "nap", (0.0,), {},
                                  timeout=0.05 if how == "timed out" else None))
        assert waiting is not None
        if how == "terminated":
            assert await pool.cancel("waiting", "revoked by a test")
        assert type(await waiting).__name__ == ("Terminated" if how == "terminated"
                                                else "TimedOut")
    finally:
        await pool.stop()  # raised KeyError here
