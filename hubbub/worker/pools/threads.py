"""Threads: blocking I/O in sync code. ``solo`` is this pool with one thread."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, ClassVar

from hubbub.worker.execute import in_thread
from hubbub.worker.pools.base import Job, Outcome, Pool
from hubbub.worker.stopping import Running

if TYPE_CHECKING:
    from hubbub.hub import Hub


class ThreadPool(Pool):
    """Every task, sync or ``async def`` (on a private loop), runs in a thread of its own pool.

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
        self._executor: ThreadPoolExecutor | None = None
        self._hub: Hub | None = None
        self._running = Running()

    async def start(self, hub: Hub) -> None:
        self._hub = hub
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="hubbub-task")

    async def run(self, job: Job) -> Outcome:
        assert self._executor is not None, "pool not started"
        assert self._hub is not None, "pool not started"
        stop = self._running.add(job)
        try:
            return await in_thread(self._executor, self._hub.tasks[job.task], job, stop)
        finally:
            self._running.remove(stop)

    async def cancel(self, job_id: str, reason: str) -> bool:
        """Raise ``TerminateRequested`` in the job's thread; it is reported ``Terminated``."""
        return self._running.terminate(job_id, reason)

    async def resize(self, concurrency: int) -> None:
        await super().resize(concurrency)
        if self._executor is not None and concurrency > self._executor._max_workers:
            # A ThreadPoolExecutor cannot grow: new work goes to a bigger one while the old
            # one finishes what it runs.
            old = self._executor
            self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="hubbub-task")
            old.shutdown(wait=False)

    async def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


class SoloPool(ThreadPool):
    """One task at a time, in one thread: the simplest to debug."""

    kind: ClassVar[str] = "solo"
    summary: ClassVar[str] = "one task at a time, in one thread; for debugging"
    resizable: ClassVar[bool] = False  # always one thread

    def __init__(self, concurrency: int = 1) -> None:
        if concurrency != 1:
            raise ValueError("the solo pool runs one task at a time; use --pool threads -c N")
        super().__init__(1)
