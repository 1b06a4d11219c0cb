"""A hybrid child's sync jobs (``SyncThreads``), driven on the test's own loop: outcomes, the
spread over threads, progress order, terminate and time limits. The pool-level behaviour
(in real children) is in test_hybrid.py, test_terminate.py and test_progress.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from hubbub import Hub
from hubbub.errors import SoftTimeLimitExceeded, TaskTimedOut
from hubbub.job import Job, Outcome, Succeeded, Terminated, TimedOut
from hubbub.task import Task, TaskOptions
from hubbub.worker.pools._sync_threads import SyncThreads
from hubbub.worker.stopping import TerminateRequested
from tests.worker.spinning import spin_until_interrupted


class Replies:
    """What a ``SyncThreads`` hands back, in order: ``(seq, outcome)`` and posted items."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.outcomes: dict[int, Outcome] = {}
        self.changed = asyncio.Event()

    def reply(self, seq: int, outcome: Outcome) -> None:
        assert seq not in self.outcomes, f"job {seq} answered twice"
        self.outcomes[seq] = outcome
        self.seen.append(("done", seq))
        self.changed.set()

    def other(self, item: Any) -> None:
        self.seen.append(item)
        self.changed.set()

    async def until(self, seqs: range | list[int], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not all(seq in self.outcomes for seq in seqs):
                self.changed.clear()
                await self.changed.wait()


def task(hub: Hub, fn: Callable[..., Any]) -> Task[Any, Any]:
    return Task(hub, fn, TaskOptions(name="t"))


def job(*args: Any, timeout: float | None = None, soft_timeout: float | None = None) -> Job:
    return Job("job-id", "t", args, {}, timeout=timeout, soft_timeout=soft_timeout)


async def started(flag: threading.Event) -> None:
    async with asyncio.timeout(10):
        while not flag.is_set():
            await asyncio.sleep(0.005)


async def test_every_job_gets_its_own_outcome_once(hub: Hub) -> None:
    replies = Replies()
    threads = SyncThreads(4, replies.reply, replies.other)
    double = task(hub, lambda x: 2 * x)
    for seq in range(300):
        threads.run(seq, job(seq), double)
    await replies.until(range(300))
    await threads.wait()
    threads.close()
    assert {seq: o.value for seq, o in replies.outcomes.items()  # type: ignore[union-attr]
            } == {seq: 2 * seq for seq in range(300)}
    assert not threads.open


async def test_jobs_that_block_spread_over_threads_up_to_the_limit(hub: Hub) -> None:
    replies = Replies()
    threads = SyncThreads(4, replies.reply, replies.other)
    barrier = threading.Barrier(4, timeout=10)  # passes only with 4 jobs running at once
    lock, running, most = threading.Lock(), [0], [0]

    def meet() -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return barrier.wait()
        finally:
            with lock:
                running[0] -= 1

    meets = task(hub, meet)
    for seq in range(8):
        threads.run(seq, job(), meets)
    await replies.until(range(8), timeout=30)
    threads.close()
    assert all(isinstance(o, Succeeded) for o in replies.outcomes.values()), replies.outcomes
    assert most[0] == 4


async def test_jobs_that_block_briefly_but_often_are_not_run_one_by_one(hub: Hub) -> None:
    replies = Replies()
    threads = SyncThreads(8, replies.reply, replies.other)
    lock, running, most = threading.Lock(), [0], [0]

    def naps() -> None:  # a job is taken every 5 ms: the thread is never idle, yet blocked
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1

    for seq in range(64):
        threads.run(seq, job(), task(hub, naps))
    await replies.until(range(64), timeout=30)
    threads.close()
    assert most[0] >= 2


async def test_a_job_handed_over_while_the_jobs_block_wakes_an_idle_thread_at_once(
        hub: Hub) -> None:
    replies = Replies()
    threads = SyncThreads(2, replies.reply, replies.other)
    holding, release, began = threading.Event(), threading.Event(), threading.Event()

    def holds() -> None:
        holding.set()
        release.wait(10)

    threads.run(1, job(), task(hub, holds))
    await started(holding)
    threads.run(2, job(), task(hub, lambda: time.sleep(0.005)))  # blocks: a second thread
    await replies.until([2])
    threads.run(3, job(), task(hub, began.set))
    # The loop is held here: only a wake-up at hand-over, not a look, can start job 3.
    woke = began.wait(2)
    release.set()
    await replies.until([1, 3])
    threads.close()
    assert woke


async def test_progress_posted_from_a_job_reaches_the_loop_before_its_outcome(
        hub: Hub) -> None:
    replies = Replies()
    threads = SyncThreads(2, replies.reply, replies.other)

    def reports(seq: int) -> None:
        threads.post(("progress", seq))

    for seq in range(100):
        threads.run(seq, job(seq), task(hub, reports))
    await replies.until(range(100))
    threads.close()
    for seq in range(100):
        assert replies.seen.index(("progress", seq)) < replies.seen.index(("done", seq))


async def test_an_outcome_does_not_wait_for_the_long_job_its_thread_goes_on_with(
        hub: Hub) -> None:
    replies = Replies()
    threads = SyncThreads(1, replies.reply, replies.other)
    release = threading.Event()
    threads.run(1, job(), task(hub, lambda: "quick"))
    threads.run(2, job(), task(hub, lambda: release.wait(10)))
    threads.run(3, job(), task(hub, lambda: "after"))  # keeps a job waiting meanwhile
    await replies.until([1], timeout=5)
    assert 2 not in replies.outcomes  # answered while job 2 still runs
    release.set()
    await replies.until([2, 3])
    threads.close()


async def test_a_terminate_is_reported_at_once_and_raised_in_the_jobs_thread(
        hub: Hub) -> None:
    replies = Replies()
    threads = SyncThreads(1, replies.reply, replies.other)
    running, seen = threading.Event(), []

    def loops() -> None:
        running.set()
        spin_until_interrupted(seen)

    threads.run(1, job(), task(hub, loops))
    await started(running)
    assert threads.cancel(1, "revoked")
    assert isinstance(replies.outcomes[1], Terminated)
    assert replies.outcomes[1].reason == "revoked"
    assert not threads.cancel(1, "again")  # reported: nothing left to stop
    threads.run(2, job(), task(hub, lambda: "next"))  # the thread is free again
    await replies.until([2])
    threads.close()
    assert seen == [TerminateRequested]
    assert replies.outcomes[2] == Succeeded("next", replies.outcomes[2].duration)


async def test_a_job_terminated_while_it_waits_for_a_thread_never_runs(hub: Hub) -> None:
    replies = Replies()
    threads = SyncThreads(1, replies.reply, replies.other)
    running, release, ran = threading.Event(), threading.Event(), []

    def holds() -> None:
        running.set()
        release.wait(10)

    threads.run(1, job(), task(hub, holds))
    await started(running)
    threads.run(2, job(), task(hub, lambda: ran.append("ran")))
    assert threads.cancel(2, "revoked")
    assert isinstance(replies.outcomes[2], Terminated)
    release.set()
    await replies.until([1])
    await threads.wait()
    threads.close()
    assert isinstance(replies.outcomes[1], Succeeded)
    assert ran == []


async def test_the_hard_limit_reports_timed_out_at_once_and_interrupts_the_thread(
        hub: Hub) -> None:
    replies = Replies()
    threads = SyncThreads(1, replies.reply, replies.other)
    seen: list[type[BaseException]] = []
    stopped = threading.Event()

    def overruns() -> None:
        try:
            spin_until_interrupted(seen)
        finally:
            stopped.set()

    begun = time.monotonic()
    threads.run(1, job(timeout=0.2), task(hub, overruns))
    await replies.until([1])
    assert time.monotonic() - begun < 5
    assert isinstance(replies.outcomes[1], TimedOut)
    assert replies.outcomes[1].limit == 0.2
    await started(stopped)
    threads.close()
    assert seen == [TaskTimedOut]


async def test_the_soft_limit_is_raised_in_the_task_which_may_clean_up(hub: Hub) -> None:
    replies = Replies()
    threads = SyncThreads(1, replies.reply, replies.other)

    def cleans_up() -> str:
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "not interrupted"

    threads.run(1, job(soft_timeout=0.1, timeout=20), task(hub, cleans_up))
    await replies.until([1])
    threads.close()
    assert replies.outcomes[1] == Succeeded("cleaned up", replies.outcomes[1].duration)


async def test_closed_threads_exit_once_idle(hub: Hub) -> None:
    before = set(threading.enumerate())
    replies = Replies()
    threads = SyncThreads(3, replies.reply, replies.other)
    barrier = threading.Barrier(3, timeout=10)
    for seq in range(3):
        threads.run(seq, job(), task(hub, barrier.wait))
    await replies.until(range(3))
    ours = [t for t in set(threading.enumerate()) - before if t.name.startswith("hubbub-sync_")]
    assert len(ours) == 3
    threads.close()
    async with asyncio.timeout(10):
        while any(t.is_alive() for t in ours):
            await asyncio.sleep(0.01)


async def test_close_delivers_an_outcome_handed_over_while_jobs_waited(hub: Hub) -> None:
    """A thread that finishes a job while others wait hands its outcome over without waking
    the loop, for the next look; ``close`` ends the looks, so it must deliver it itself, or
    the job would stay unanswered until some other job ends (never, if that one is stuck)."""
    replies = Replies()
    threads = SyncThreads(1, replies.reply, replies.other)
    first_may_end, second_started, second_may_end = (threading.Event() for _ in range(3))

    def second() -> None:
        second_started.set()
        assert second_may_end.wait(10)

    threads.run(0, job(), task(hub, lambda: first_may_end.wait(10)))
    threads.run(1, job(), task(hub, second))  # waits: one thread
    try:
        await asyncio.sleep(0.01)  # the thread takes job 0
        first_may_end.set()
        # Block the loop (no look can run) until the thread has handed over job 0's outcome
        # and taken job 1.
        assert second_started.wait(10)
        threads.close()
        await replies.until([0], timeout=2)
        assert 1 not in replies.outcomes
    finally:
        second_may_end.set()
    await replies.until([1])
