"""Threads: blocking I/O in sync code. ``solo`` is this pool with one thread."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar

from hubbub.worker.pools._sync_threads import SyncThreads
from hubbub.worker.pools.base import Job, Outcome, Pool

if TYPE_CHECKING:
    from hubbub.hub import Hub


class ThreadPool(Pool):
    """Every task, sync or ``async def`` (on a private loop), runs in one of up to
    ``concurrency`` threads.

    Jobs go on one queue that the threads take from, and their outcomes come back to the
    worker's loop in batches (:class:`~hubbub.worker.pools._sync_threads.SyncThreads`): short
    tasks run one after another in one thread without handing the GIL around, and tasks that
    block spread over more threads within a few milliseconds.

    Time limits and terminating are best effort: ``TerminateRequested`` (or
    ``TaskTimedOut``) is raised in the task's thread at its next Python instruction and the
    job is reported at once; a task stuck in a C call keeps its thread until the call returns.
    See :mod:`hubbub.worker.execute`.
    """

    kind: ClassVar[str] = "threads"
    summary: ClassVar[str] = "a thread pool; blocking I/O in sync code"
    resizable: ClassVar[bool] = True

    def __init__(self, concurrency: int = 8) -> None:
        super().__init__(concurrency)
        self._threads: SyncThreads | None = None
        self._hub: Hub | None = None
        self._futures: dict[int, asyncio.Future[Outcome]] = {}  # by job number, until reported
        self._seq = 0

    async def start(self, hub: Hub) -> None:
        self._hub = hub
        self._threads = SyncThreads(self.concurrency, self._reply, name="hubbub-task")

    def submit(self, job: Job) -> asyncio.Future[Outcome]:
        """Queue ``job`` for the threads at once; see ``Pool.submit``. The worker gives the
        pool no more than ``concurrency`` jobs at a time, and there are as many threads, so
        the pool always has room."""
        threads, hub = self._threads, self._hub
        assert threads is not None, "pool not started"
        assert hub is not None, "pool not started"
        self._seq += 1
        future = threads.loop.create_future()
        self._futures[self._seq] = future
        threads.run(self._seq, job, hub.tasks[job.task])
        return future

    async def run(self, job: Job) -> Outcome:
        return await self.submit(job)

    def _reply(self, seq: int, outcome: Outcome) -> None:
        future = self._futures.pop(seq)
        if not future.done():  # cancelled: the caller gave up on the outcome
            future.set_result(outcome)

    async def cancel(self, job_id: str, reason: str) -> bool:
        """Raise ``TerminateRequested`` in the job's thread (or skip it if it waits for one);
        it is reported ``Terminated`` at once. Every job running with that id is stopped (a
        redelivered message can run twice at once)."""
        if self._threads is None:
            return False
        found = [seq for seq, entry in self._threads.open.items() if entry.job.id == job_id]
        stopped = [self._threads.cancel(seq, reason) for seq in found]  # every one, not the first
        return any(stopped)

    async def resize(self, concurrency: int) -> None:
        await super().resize(concurrency)
        if self._threads is not None:
            self._threads.resize(concurrency)

    async def stop(self) -> None:
        """Jobs waiting for a thread never start (their futures are cancelled); running ones
        finish in their threads, which then exit."""
        if self._threads is not None:
            for seq in self._threads.close():
                self._futures.pop(seq).cancel()


class SoloPool(ThreadPool):
    """One task at a time, in one thread: the simplest to debug."""

    kind: ClassVar[str] = "solo"
    summary: ClassVar[str] = "one task at a time, in one thread; for debugging"
    resizable: ClassVar[bool] = False  # always one thread

    def __init__(self, concurrency: int = 1) -> None:
        if concurrency != 1:
            raise ValueError("the solo pool runs one task at a time; use --pool threads -c N")
        super().__init__(1)
