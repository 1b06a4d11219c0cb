"""Coroutines on the worker's own event loop: thousands of ``async def`` I/O tasks at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, ClassVar

from hubbub.worker.execute import in_thread, on_loop
from hubbub.worker.pools.base import Job, Outcome, Pool

if TYPE_CHECKING:
    from hubbub.hub import Hub

SYNC_THREADS = 32  # at most this many sync tasks run at once (in threads) on this pool


class AsyncPool(Pool):
    """``async def`` tasks run as coroutines on the worker loop; sync tasks run in threads.

    A task that blocks the loop stalls everything on it; keep blocking code in sync tasks.
    """

    kind: ClassVar[str] = "async"

    def __init__(self, concurrency: int = 100) -> None:
        super().__init__(concurrency)
        self._executor: ThreadPoolExecutor | None = None
        self._hub: Hub | None = None

    async def start(self, hub: Hub) -> None:
        self._hub = hub
        self._executor = ThreadPoolExecutor(min(self.concurrency, SYNC_THREADS),
                                            thread_name_prefix="hubbub-sync")

    async def run(self, job: Job) -> Outcome:
        assert self._executor is not None, "pool not started"
        assert self._hub is not None, "pool not started"
        task = self._hub.tasks[job.task]
        if task.is_async:
            return await on_loop(task, job)
        return await in_thread(self._executor, task, job)

    async def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
