"""Running one job and turning whatever happens into an ``Outcome``.

Every pool uses these functions, so a task behaves the same wherever it runs. Nothing a
task does escapes as an exception: ``Retry``/``Reject`` steer, anything else is a failure.

Time limits, by where the task runs:

- on the event loop (``async def`` on the async pool): at ``soft_timeout`` the task is
  cancelled (it sees ``asyncio.CancelledError`` and may clean up; the outcome names
  SoftTimeLimitExceeded); at ``timeout`` it is abandoned and reported as timed out.
- in a thread: at ``soft_timeout`` ``SoftTimeLimitExceeded`` is raised inside the thread at
  its next Python instruction (not while it waits inside a C call such as ``time.sleep``);
  at ``timeout`` ``TaskTimedOut`` is raised the same way and the task is reported as timed
  out at once. A thread cannot be killed: one stuck in C keeps its slot until it returns.
- in a child process (prefork, hybrid): the child is killed at ``timeout``; exact.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time
import traceback
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from hubbub.codecs import json_dumps
from hubbub.context import TaskContext, enter, leave
from hubbub.errors import Reject, Retry, SoftTimeLimitExceeded, TaskTimedOut
from hubbub.job import Failed, Job, Outcome, Rejected, Succeeded, TimedOut
from hubbub.results.base import ErrorInfo
from hubbub.task import Task


def context_of(job: Job) -> TaskContext:
    return TaskContext(job.id, job.task, job.retries, job.max_retries, job.queue, job.root_id,
                       job.parent_id, job.group_id, job.headers)


def failure(task: Task[Any, Any], exc: BaseException, duration: float) -> Outcome:
    """The outcome for an exception raised by a task."""
    if isinstance(exc, Retry):
        return Failed(ErrorInfo("Retry", exc.reason or "retry requested"), duration,
                      retry=True, countdown=exc.countdown)
    if isinstance(exc, Reject):
        return Rejected(exc.reason, duration)
    tb = "".join(traceback.format_exception(exc))
    error = ErrorInfo(type(exc).__name__, str(exc), tb)
    retry = isinstance(exc, task.spec.retry_for or (Exception,))
    return Failed(error, duration, retry=retry)


def success(task: Task[Any, Any], value: Any, duration: float) -> Outcome:
    """The outcome for a returned value; a value the result store cannot hold is a failure."""
    if not task.spec.ignore_result:
        try:
            json_dumps(value)
        except (TypeError, ValueError) as exc:
            return Failed(ErrorInfo("ResultError", f"return value cannot be stored as JSON: {exc}"),
                          duration)
    return Succeeded(value, duration)


@dataclass
class _InThread:
    """Where a job runs in a thread, so that its time limits can reach it."""

    thread: int | None = None
    loop: asyncio.AbstractEventLoop | None = None  # an ``async def`` job's private loop
    task: asyncio.Task[Any] | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    def interrupt(self, exc_type: type[BaseException]) -> None:
        """Stop the job: cancel a coroutine (even mid-``select``), else raise in the thread."""
        if self.finished.is_set():
            return
        if self.loop is not None and self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel, exc_type.__name__)
        elif self.thread is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread),
                                                       ctypes.py_object(exc_type))


def run_sync(task: Task[Any, Any], job: Job, where: _InThread | None = None) -> Outcome:
    """Run a job to completion in the calling thread (``async def`` gets its own loop)."""
    token = enter(context_of(job))
    started = time.monotonic()
    try:
        if task.is_async:
            value = asyncio.run(_on_private_loop(task, job, where))
        else:
            value = task.fn(*job.args, **job.kwargs)
    except asyncio.CancelledError:  # only our time limits cancel a job's private loop
        error = SoftTimeLimitExceeded("cancelled at its time limit")
        return failure(task, error, time.monotonic() - started)
    except (Exception, SystemExit) as exc:
        return failure(task, exc, time.monotonic() - started)
    finally:
        leave(token)
    return success(task, value, time.monotonic() - started)


async def _on_private_loop(task: Task[Any, Any], job: Job, where: _InThread | None) -> Any:
    if where is not None:
        where.loop, where.task = asyncio.get_running_loop(), asyncio.current_task()
    return await task.fn(*job.args, **job.kwargs)


def limits(job: Job) -> tuple[float | None, float | None]:
    """(soft, hard) limits; a soft limit at or past the hard one is moot."""
    soft, hard = job.soft_timeout, job.timeout
    if soft is not None and hard is not None and soft >= hard:
        soft = None
    return soft, hard


async def on_loop(task: Task[Any, Any], job: Job) -> Outcome:
    """Run an ``async def`` job as a coroutine on the running loop, with its time limits."""
    soft, hard = limits(job)
    token = enter(context_of(job))
    started = time.monotonic()
    if soft is None and hard is None:  # the common case: no second task, no timers
        try:
            value = await task.fn(*job.args, **job.kwargs)
        except (Exception, SystemExit) as exc:
            return failure(task, exc, time.monotonic() - started)
        finally:
            leave(token)
        return success(task, value, time.monotonic() - started)
    try:
        inner = asyncio.ensure_future(task.fn(*job.args, **job.kwargs))
    finally:
        leave(token)
    first = soft if soft is not None else hard
    done, _ = await asyncio.wait({inner}, timeout=first)
    if not done and soft is not None:
        inner.cancel("soft time limit exceeded")
        rest = None if hard is None else max(0.0, hard - soft)
        done, _ = await asyncio.wait({inner}, timeout=rest)
        if done and inner.cancelled():
            return failure(task, SoftTimeLimitExceeded(f"soft time limit ({soft}s) exceeded"),
                           time.monotonic() - started)
    if not done:
        inner.cancel("time limit exceeded")
        assert hard is not None
        return TimedOut(hard, time.monotonic() - started)
    duration = time.monotonic() - started
    if inner.cancelled():
        return failure(task, asyncio.CancelledError("task was cancelled"), duration)
    error = inner.exception()
    if error is not None:
        return failure(task, error, duration)
    return success(task, inner.result(), duration)


async def in_thread(executor: Executor, task: Task[Any, Any], job: Job) -> Outcome:
    """Run a job in ``executor``'s threads, enforcing time limits as well as threads allow."""
    loop = asyncio.get_running_loop()
    where = _InThread()

    def call() -> Outcome:
        where.thread = threading.get_ident()
        try:
            return run_sync(task, job, where)
        finally:
            where.finished.set()

    future = asyncio.wrap_future(executor.submit(call), loop=loop)
    soft, hard = limits(job)
    if soft is None and hard is None:
        return await future
    started = time.monotonic()
    first = soft if soft is not None else hard
    done, _ = await asyncio.wait({future}, timeout=first)
    if not done and soft is not None:
        where.interrupt(SoftTimeLimitExceeded)
        rest = None if hard is None else max(0.0, hard - soft)
        done, _ = await asyncio.wait({future}, timeout=rest)
    if done:
        return future.result()
    where.interrupt(TaskTimedOut)
    assert hard is not None
    return TimedOut(hard, time.monotonic() - started)
