"""Coroutines on the worker's own event loop: thousands of ``async def`` I/O tasks at once.

An ``async def`` task that calls blocking code (``time.sleep``, a sync HTTP client, heavy CPU)
stalls every task on the loop and the worker's broker I/O with them. The pool cannot stop
that, but it notices: a watchdog thread checks a heartbeat the loop bumps, and when the loop
has not run for ``block_warning`` seconds it logs one warning per stall naming the task that
is executing on the loop at that moment.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from hubbub.worker.execute import JOB_TASK_PREFIX, in_thread, on_loop
from hubbub.worker.pools.base import Job, Outcome, Pool
from hubbub.worker.stopping import Running

if TYPE_CHECKING:
    from hubbub.hub import Hub

SYNC_THREADS = 32  # at most this many sync tasks run at once (in threads) on this pool
BLOCK_WARNING = 0.5  # seconds the loop may be blocked before the watchdog warns

log = logging.getLogger("hubbub.worker")


class AsyncPool(Pool):
    """``async def`` tasks run as coroutines on the worker loop; sync tasks run in threads.

    A task that blocks the loop stalls everything on it; keep blocking code in sync tasks.

    Args:
        concurrency: tasks at once (default 100).
        block_warning: warn when the loop was blocked this many seconds (None: never).

    Raises:
        ValueError: concurrency below 1, or a threshold that is not positive.
    """

    kind: ClassVar[str] = "async"
    summary: ClassVar[str] = ("coroutines on the worker's loop, sync tasks in threads; "
                              "async def I/O")

    def __init__(self, concurrency: int = 100, *,
                 block_warning: float | None = BLOCK_WARNING) -> None:
        super().__init__(concurrency)
        if block_warning is not None and block_warning <= 0:
            raise ValueError(f"block_warning must be positive seconds, got {block_warning}")
        self.block_warning = block_warning
        self._executor: ThreadPoolExecutor | None = None
        self._hub: Hub | None = None
        self._watchdog: LoopWatchdog | None = None
        self._on_loop_jobs: dict[asyncio.Task[Any], Job] = {}  # async jobs by their task
        self._running = Running()

    async def start(self, hub: Hub) -> None:
        self._hub = hub
        self._executor = ThreadPoolExecutor(min(self.concurrency, SYNC_THREADS),
                                            thread_name_prefix="hubbub-sync")
        if self.block_warning is not None:
            self._watchdog = LoopWatchdog(self.block_warning, self._describe)
            self._watchdog.start()

    async def run(self, job: Job) -> Outcome:
        assert self._executor is not None, "pool not started"
        assert self._hub is not None, "pool not started"
        task = self._hub.tasks[job.task]
        if task.is_async:
            return await self._on_loop(task, job)
        stop = self._running.add(job)
        try:
            return await in_thread(self._executor, task, job, stop)
        finally:
            self._running.remove(stop)

    def submit(self, job: Job) -> asyncio.Future[Outcome] | None:
        """An ``async def`` job starts now as one asyncio task of its own, which the worker
        settles by a callback: no task of the worker's around it, nor a coroutine awaiting
        another (the worker's slot is its admission). A sync job goes the long way (``run``).
        """
        assert self._hub is not None, "pool not started"
        task = self._hub.tasks[job.task]
        if not task.is_async:
            return None
        return asyncio.get_running_loop().create_task(self._on_loop(task, job))

    async def _on_loop(self, task: Any, job: Job) -> Outcome:
        """An ``async def`` job, run in the asyncio task that awaits this (or, with time
        limits, in one it awaits): the watchdog looks it up here to say which job holds the
        loop."""
        stop = self._running.add(job)
        me = asyncio.current_task()
        if me is not None:
            self._on_loop_jobs[me] = job
        try:
            return await on_loop(task, job, stop, me=me)
        finally:
            if me is not None:
                self._on_loop_jobs.pop(me, None)
            self._running.remove(stop)

    async def cancel(self, job_id: str, reason: str) -> bool:
        """Cancel the job's coroutine, or raise ``TerminateRequested`` in a sync job's thread;
        it is reported ``Terminated``. A coroutine that catches the cancellation and goes on
        runs to its end (and is still reported ``Terminated``)."""
        return self._running.terminate(job_id, reason)

    async def stop(self) -> None:
        if self._watchdog is not None:
            await self._watchdog.stop()
            self._watchdog = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _describe(self, current: asyncio.Task[Any] | None) -> str:
        """Who is running on the loop, from the watchdog thread: read-only lookups."""
        if current is None:
            return "a callback outside any task"
        job = self._on_loop_jobs.get(current)
        if job is not None:
            return f"task {job.task}[{job.id}]"
        name = current.get_name()  # a job with time limits runs in a task of its own
        if name.startswith(JOB_TASK_PREFIX):
            return f"task {name.removeprefix(JOB_TASK_PREFIX)}"
        coro = current.get_coro()
        return f"coroutine {getattr(coro, '__qualname__', repr(coro))}"


class LoopWatchdog:
    """Warns once per stall when the running loop has not run for ``threshold`` seconds.

    A ticker coroutine on the loop stamps a heartbeat every ``threshold / 5`` seconds; a
    daemon thread compares it with the clock and, on a stall, asks ``describe`` who holds
    the loop (``asyncio.current_task(loop)`` read from the thread).

    Args:
        threshold: seconds without a heartbeat that count as blocked.
        describe: names the task that is running on the loop (None: not a task).
    """

    def __init__(self, threshold: float,
                 describe: Callable[[asyncio.Task[Any] | None], str]) -> None:
        self.threshold = threshold
        self.describe = describe
        self.interval = min(max(threshold / 5, 0.01), 1.0)
        self._beat = time.monotonic()
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching the running loop."""
        self._loop = asyncio.get_running_loop()
        self._beat = time.monotonic()
        self._ticker = self._loop.create_task(self._tick())
        self._thread = threading.Thread(target=self._watch, name="hubbub-loop-watchdog",
                                        daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopped.set()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    async def _tick(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(self.interval)

    def _watch(self) -> None:
        reported = None  # the heartbeat of the stall already warned about
        while not self._stopped.wait(self.interval):
            beat = self._beat
            blocked = time.monotonic() - beat
            if blocked < self.threshold + self.interval or beat == reported:
                continue
            reported = beat
            try:
                who = self.describe(asyncio.current_task(self._loop))
            except Exception:  # reading another thread's state must never kill the watchdog
                who = "something"
            log.warning("%s has blocked the event loop for %.1fs: an async def task must not "
                        "call blocking code (time.sleep, sync I/O, heavy CPU); await an async "
                        "equivalent or make it a plain def task", who, blocked)
