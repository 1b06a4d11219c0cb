"""Running one job and turning whatever happens into an ``Outcome``.

Every pool uses these functions, so a task behaves the same wherever it runs. Nothing a
task does escapes as an exception: ``Retry``/``Reject`` steer, anything else is a failure.
What a task did becomes an outcome in :mod:`hubbub.worker.outcome_of`; how a running job is
stopped (a terminate, a time limit in a thread) is in :mod:`hubbub.worker.stopping`. Their
names are re-exported here, where the pools and the worker have always found them.

Time limits, by where the task runs:

- on the event loop (``async def`` on the async pool): at ``soft_timeout`` the task is
  cancelled (it sees ``asyncio.CancelledError`` and may clean up; the outcome names
  SoftTimeLimitExceeded); at ``timeout`` it is abandoned and reported as timed out.
- in a thread: at ``soft_timeout`` ``SoftTimeLimitExceeded`` is raised inside the thread at
  its next Python instruction (not while it waits inside a C call such as ``time.sleep``);
  at ``timeout`` ``TaskTimedOut`` is raised the same way and the task is reported as timed
  out at once. A thread cannot be killed: one stuck in C keeps its slot until it returns.
- in a child process (prefork, hybrid): the child is killed at ``timeout``; exact.

Terminating (a revoke with ``terminate=True``, through ``Pool.cancel``) reuses the same means:
a pool tracks each running job in a :class:`~hubbub.worker.stopping.Stoppable`
(:class:`~hubbub.worker.stopping.Running` finds it by id), the runner here arms it with how to
stop the job, and the terminate and the job's own end race for it: the first one wins, so a
job has exactly one outcome, ``Terminated`` if the terminate won.

Containment: whatever a task raises is its failure, ``BaseException`` subclasses included
(``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``): none of them may stop a worker or
a child. The one exception is ``asyncio.CancelledError`` when the cancellation is ours (a time
limit, or the worker stopping): that one propagates. Describing an exception never raises
(:func:`~hubbub.worker.outcome_of.describe`), and a returned value is checked with the codec
results are stored with (:func:`~hubbub.worker.outcome_of.success`), so every outcome a pool
reports can be sent and stored.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Executor
from typing import Any

from hubbub._bridge import one_job_loop
from hubbub.context import TaskContext, enter, leave, maybe_current_task, task_context
from hubbub.errors import SoftTimeLimitExceeded, TaskTimedOut
from hubbub.job import Job, Outcome, TimedOut
from hubbub.task import Task
from hubbub.worker.outcome_of import (
    TEXT_LIMIT,
    clean_text,
    describe,
    exception_text,
    failure,
    message_of,
    success,
    traceback_of,
    type_name,
    unencodable,
)
from hubbub.worker.stopping import InThread, Running, Stoppable, TerminateRequested

__all__ = [
    "JOB_TASK_PREFIX",
    "TEXT_LIMIT",
    "InThread",
    "Running",
    "Stoppable",
    "TerminateRequested",
    "clean_text",
    "context_of",
    "describe",
    "exception_text",
    "failure",
    "in_thread",
    "job_label",
    "limits",
    "message_of",
    "on_loop",
    "run_sync",
    "success",
    "traceback_of",
    "type_name",
    "unencodable",
]

JOB_TASK_PREFIX = "hubbub-job:"  # names the asyncio task a job with time limits runs in


def context_of(job: Job) -> TaskContext:
    return task_context(job.id, job.task, job.retries, job.max_retries, job.queue,
                        job.root_id, job.parent_id, job.group_id, job.headers)


def job_label(job: Job) -> str:
    """``"shop.add[6f1c...]"``: how log lines name a job."""
    return f"{job.task}[{job.id}]"


def _call(task: Task[Any, Any], job: Job, ctx: TaskContext) -> Any:
    """Call a sync task's function, inside the hub's task hooks when it has any."""
    if not task.hooks:
        return task.fn(*job.args, **job.kwargs)
    return task.hooks.call(ctx, task.fn, job.args, job.kwargs)


async def _await(task: Task[Any, Any], job: Job) -> Any:
    """Await an ``async def`` task's coroutine, inside the hub's task hooks when it has any
    (entered in the asyncio task that runs the job, whose context holds the TaskContext)."""
    if not task.hooks:
        return await task.fn(*job.args, **job.kwargs)
    ctx = maybe_current_task() or context_of(job)
    return await task.hooks.call_async(ctx, task.fn, job.args, job.kwargs)


def _ours() -> bool:
    """Whether the running asyncio task has been asked to cancel (by a limit or a stop)."""
    me = asyncio.current_task()
    return me is not None and me.cancelling() > 0


async def _contained(task: Task[Any, Any], job: Job) -> tuple[Any, BaseException | None]:
    """``(value, None)`` or ``(None, what the task raised)``: nothing but our own cancellation
    leaves this coroutine, so no ``KeyboardInterrupt``/``SystemExit`` reaches a loop."""
    try:
        return await _await(task, job), None
    except asyncio.CancelledError as exc:
        if _ours():
            raise
        return None, exc
    except BaseException as exc:  # anything the task raised is its failure
        return None, exc


def run_sync(task: Task[Any, Any], job: Job, where: InThread | None = None) -> Outcome:
    """Run a job to completion in the calling thread (``async def`` gets its own loop)."""
    ctx = context_of(job)
    token = enter(ctx)
    started = time.monotonic()
    try:
        if task.is_async:
            value, error = asyncio.run(_on_private_loop(task, job, where))
            if error is not None:
                return failure(task, error, time.monotonic() - started)
        elif where is None:
            value = _call(task, job, ctx)
        else:
            where.enter()
            try:
                value = _call(task, job, ctx)
            finally:
                where.leave()
    except asyncio.CancelledError as exc:
        if where is not None and where.interrupted:  # our time limit cancelled its loop
            limit = SoftTimeLimitExceeded("cancelled at its time limit")
            return failure(task, limit, time.monotonic() - started)
        return failure(task, exc, time.monotonic() - started)
    except BaseException as exc:  # KeyboardInterrupt, SystemExit...: a failure
        return failure(task, exc, time.monotonic() - started)
    finally:
        leave(token)
    return success(task, value, time.monotonic() - started)


async def _on_private_loop(task: Task[Any, Any], job: Job,
                           where: InThread | None) -> tuple[Any, BaseException | None]:
    one_job_loop()
    if where is not None:
        where.attach(asyncio.get_running_loop(), asyncio.current_task())
    return await _contained(task, job)


async def on_own_loop(task: Task[Any, Any], job: Job, stop: Stoppable | None = None
                      ) -> Outcome:
    """``on_loop`` on a loop made for this one job (``asyncio.run`` in a child process)."""
    one_job_loop()
    return await on_loop(task, job, stop)


def limits(job: Job) -> tuple[float | None, float | None]:
    """(soft, hard) limits; a soft limit at or past the hard one is moot."""
    soft, hard = job.soft_timeout, job.timeout
    if soft is not None and hard is not None and soft >= hard:
        soft = None
    return soft, hard


async def on_loop(task: Task[Any, Any], job: Job, stop: Stoppable | None = None, *,
                  me: asyncio.Task[Any] | None = None) -> Outcome:
    """Run an ``async def`` job as a coroutine on the running loop, with its time limits.

    With ``stop``, a terminate cancels the coroutine; the outcome is then ``Terminated``.
    ``me`` is the asyncio task this runs in, when the caller has it already (None: looked up).
    """
    soft, hard = limits(job)
    token = enter(context_of(job))
    started = time.monotonic()
    if soft is None and hard is None:  # the common case: no second task, no timers
        if me is None:
            me = asyncio.current_task()
        if stop is not None and me is not None:
            stop.arm_task(me)
        error: BaseException | None = None
        try:
            # Without hooks, awaited here: a coroutine less to step through, twice a job.
            value = await (task.fn(*job.args, **job.kwargs) if not task.hooks
                           else _await(task, job))
        except BaseException as exc:  # KeyboardInterrupt, SystemExit...: a failure
            error = exc
        finally:
            leave(token)
        terminated = stop is not None and stop.end()
        if stop is not None and stop.cancelled and me is not None:
            me.uncancel()  # our cancel is spent: what is left is someone else's
        if isinstance(error, asyncio.CancelledError) and _ours():
            raise error  # the worker is stopping: let the cancellation through
        if stop is not None and terminated:
            return stop.outcome()
        if error is not None:
            return failure(task, error, time.monotonic() - started)
        return success(task, value, time.monotonic() - started)
    try:
        # Wrapped: an asyncio task re-raises KeyboardInterrupt and SystemExit into the loop
        # that runs it, which would stop the worker (or the child) with the task's status.
        inner = asyncio.get_running_loop().create_task(_contained(task, job),
                                                       name=JOB_TASK_PREFIX + job_label(job))
    finally:
        leave(token)
    if stop is not None:
        stop.arm_task(inner)
    try:
        outcome = await _limited(task, inner, soft, hard, started)
    finally:
        terminated = stop is not None and stop.end()
    if stop is not None and terminated:
        return stop.outcome()
    return outcome


async def _limited(task: Task[Any, Any], inner: asyncio.Task[tuple[Any, BaseException | None]],
                   soft: float | None, hard: float | None, started: float) -> Outcome:
    """The outcome of ``inner``, which runs the job, with its soft and hard limits kept."""
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
    value, error = inner.result()
    if error is not None:
        return failure(task, error, duration)
    return success(task, value, duration)


async def in_thread(executor: Executor, task: Task[Any, Any], job: Job,
                    stop: Stoppable | None = None) -> Outcome:
    """Run a job in ``executor``'s threads, enforcing time limits as well as threads allow.

    With ``stop``, a terminate raises ``TerminateRequested`` in the thread (or cancels an
    ``async def`` job's coroutine) and the job is reported ``Terminated`` at once.
    """
    loop = asyncio.get_running_loop()
    where = InThread()

    def call() -> Outcome:
        where.thread = threading.get_ident()
        try:
            if stop is not None and stop.terminated:  # terminated while it waited for a thread
                return stop.outcome()
            return run_sync(task, job, where)
        except BaseException as exc:  # an interrupt that landed after the task's own code
            return failure(task, exc, 0.0)
        finally:
            where.finish()

    future = asyncio.wrap_future(executor.submit(call), loop=loop)
    if stop is None:
        return await _in_thread_limited(future, where, job)

    def terminate(reason: str) -> None:
        where.interrupt(TerminateRequested)
        # Stop waiting for the thread: the cancelled wait tells ``in_thread`` to report.
        loop.call_soon_threadsafe(future.cancel, reason)

    stop.arm(terminate)
    try:
        outcome = await _in_thread_limited(future, where, job)
    except asyncio.CancelledError:
        if _ours() or not stop.end():  # the worker is stopping, or the pool's threads are
            raise
        return stop.outcome()
    if stop.end():
        return stop.outcome()
    return outcome


async def _in_thread_limited(future: asyncio.Future[Outcome], where: InThread,
                             job: Job) -> Outcome:
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
    # Abandoned: what the thread ends with is nobody's; retrieve it so that it is not logged.
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    assert hard is not None
    return TimedOut(hard, time.monotonic() - started)
