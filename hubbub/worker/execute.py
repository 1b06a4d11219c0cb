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

Containment: whatever a task raises is its failure, ``BaseException`` subclasses included
(``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``): none of them may stop a worker or
a child. The one exception is ``asyncio.CancelledError`` when the cancellation is ours (a time
limit, or the worker stopping): that one propagates. Describing an exception never raises
(:func:`describe`), and a returned value is checked with the codec results are stored with
(:func:`success`), so every outcome a pool reports can be sent and stored.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import time
import traceback
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from hubbub.codecs import Unencodable, explain, json_dumps, pack
from hubbub.context import TaskContext, enter, leave
from hubbub.errors import ErrorKind, Reject, Retry, SoftTimeLimitExceeded, TaskTimedOut
from hubbub.job import Failed, Job, Outcome, Rejected, Succeeded, TimedOut
from hubbub.results.base import ErrorInfo
from hubbub.task import Task, declared_name

log = logging.getLogger("hubbub.worker")

def context_of(job: Job) -> TaskContext:
    return TaskContext(job.id, job.task, job.retries, job.max_retries, job.queue, job.root_id,
                       job.parent_id, job.group_id, job.headers)


TEXT_LIMIT = 64 * 1024  # bytes of an error message or traceback kept
JOB_TASK_PREFIX = "hubbub-job:"  # names the asyncio task a job with time limits runs in


def job_label(job: Job) -> str:
    """``"shop.add[6f1c...]"``: how log lines name a job."""
    return f"{job.task}[{job.id}]"


def clean_text(text: str, *, tail: bool = False) -> str:
    """``text`` as valid UTF-8 (a lone surrogate becomes ``\\udcff``), cut to ``TEXT_LIMIT``
    bytes (its first ones, or its last with ``tail``): what JSON stores, pickles and log lines
    can all carry."""
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= TEXT_LIMIT:
        return text if len(data) == len(text) else data.decode("utf-8")
    if tail:
        return "[...]\n" + data[-TEXT_LIMIT:].decode("utf-8", "ignore")
    return data[:TEXT_LIMIT].decode("utf-8", "ignore") + " [...]"


def type_name(exc: BaseException) -> str:
    """The exception's class name; never raises."""
    try:
        return clean_text(str(type(exc).__name__))
    except BaseException:  # a metaclass that misbehaves
        return "Exception"


def message_of(exc: BaseException) -> str:
    """``str(exc)``, else ``repr(exc)``, else ``<unprintable X>``; never raises."""
    for render in (str, repr):
        try:
            return clean_text(render(exc))
        except BaseException:  # noqa: S112 - a __str__ that raises must not escape
            continue
    return f"<unprintable {type_name(exc)}>"


def traceback_of(exc: BaseException) -> str:
    """The formatted traceback, its last ``TEXT_LIMIT`` bytes; never raises."""
    try:
        text = "".join(traceback.format_exception(exc))
    except BaseException:  # formatting runs code of the exception's own
        return ""
    return clean_text(text, tail=True)


def describe(exc: BaseException) -> ErrorInfo:
    """The one safe description of an exception: type name, message, bounded traceback.

    Never raises, whatever the exception's ``__str__``/``__repr__`` do, and the text is always
    encodable (JSON, pickle, logs).
    """
    return ErrorInfo(type_name(exc), message_of(exc), traceback_of(exc))


def exception_text(exc: BaseException) -> str:
    """``"ValueError: bad input"`` for reasons and log lines; never raises."""
    return f"{type_name(exc)}: {message_of(exc)}"


def failure(task: Task[Any, Any], exc: BaseException, duration: float) -> Outcome:
    """The outcome for an exception raised by a task (any ``BaseException``).

    A ``Retry`` raised from another exception (``raise Retry(...) from exc``, or while
    handling it) records that exception, so a task that runs out of retries fails with its
    real error, not ``Retry: reason``. An exception of a class the task declared in
    ``raises`` is recorded under that class's qualified name (``shop.OrderError``), which
    ``Result.get()`` matches to raise it as such.
    """
    if isinstance(exc, Retry):
        if task.spec.retries == 0:
            log.warning("task %s raised Retry, but it has retries=0, so it fails now: give "
                        "it @hub.task(retries=N) to be retried", task.name)
        cause = _retried_for(exc)
        if cause is not None:
            return Failed(_described(task, cause), duration, retry=True, countdown=exc.countdown)
        reason = clean_text(str(exc.reason)) if exc.reason else "retry requested"
        return Failed(ErrorInfo(ErrorKind.RETRY, reason), duration, retry=True,
                      countdown=exc.countdown)
    if isinstance(exc, Reject):
        return Rejected(clean_text(str(exc.reason)), duration)
    retry = isinstance(exc, task.spec.retry_for or (Exception,))
    error = _described(task, exc)
    if not error.message and not isinstance(exc, Exception):  # a bare ``raise KeyboardInterrupt``
        error = ErrorInfo(error.type, f"task raised {error.type}", error.traceback)
    return Failed(error, duration, retry=retry)


def _retried_for(exc: Retry) -> BaseException | None:
    """The exception a ``Retry`` was raised for (its cause, else the one being handled)."""
    cause = exc.__cause__
    if cause is None and not exc.__suppress_context__:
        cause = exc.__context__
    return None if cause is None or isinstance(cause, Retry | Reject) else cause


def _described(task: Task[Any, Any], exc: BaseException) -> ErrorInfo:
    error = describe(exc)
    for cls in type(exc).__mro__:
        if cls in task.spec.raises:  # the most specific declared class
            return ErrorInfo(clean_text(declared_name(cls)), error.message, error.traceback)
    return error


def success(task: Task[Any, Any], value: Any, duration: float) -> Outcome:
    """The outcome for a returned value; a value the result store cannot hold is a failure.

    The check packs the value as the result store does, so a success here can be stored,
    and a failure (``ResultNotEncodable``, naming the value) can be sent and stored instead.
    """
    if not task.spec.ignore_result:
        problem = unencodable(value)
        if problem is not None:
            error = ErrorInfo(ErrorKind.NOT_ENCODABLE,
                              f"return value cannot be stored as JSON: {problem}")
            return Failed(error, duration)
    return Succeeded(value, duration)


def unencodable(value: Any) -> str | None:
    """Why the result store cannot hold ``value``, or None when it can; never raises.

    The reason names the part that fails: ``result[2]['when']: cannot encode object of
    type Foo``. The value is packed and written as ``encode_record`` does
    (:func:`hubbub.codecs.pack`, then :func:`hubbub.codecs.json_dumps`).
    """
    try:
        json_dumps(pack(value))
    except Unencodable:
        return _explained(value)
    except RecursionError:
        return "it is nested too deeply"
    except BaseException as exc:  # a user type's hooks may raise anything
        return message_of(exc)
    return None


def _explained(value: Any) -> str:
    try:
        return clean_text(explain(value, "result"))
    except BaseException as exc:  # explaining runs the app's encoders again
        return message_of(exc)


def _ours() -> bool:
    """Whether the running asyncio task has been asked to cancel (by a limit or a stop)."""
    me = asyncio.current_task()
    return me is not None and me.cancelling() > 0


async def _contained(task: Task[Any, Any], job: Job) -> tuple[Any, BaseException | None]:
    """``(value, None)`` or ``(None, what the task raised)``: nothing but our own cancellation
    leaves this coroutine, so no ``KeyboardInterrupt``/``SystemExit`` reaches a loop."""
    try:
        return await task.fn(*job.args, **job.kwargs), None
    except asyncio.CancelledError as exc:
        if _ours():
            raise
        return None, exc
    except BaseException as exc:  # anything the task raised is its failure
        return None, exc


@dataclass
class _InThread:
    """Where a job runs in a thread, so that its time limits can reach it."""

    thread: int | None = None
    loop: asyncio.AbstractEventLoop | None = None  # an ``async def`` job's private loop
    task: asyncio.Task[Any] | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    interrupted: bool = False

    def interrupt(self, exc_type: type[BaseException]) -> None:
        """Stop the job: cancel a coroutine (even mid-``select``), else raise in the thread."""
        if self.finished.is_set():
            return
        self.interrupted = True
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
            value, error = asyncio.run(_on_private_loop(task, job, where))
            if error is not None:
                return failure(task, error, time.monotonic() - started)
        else:
            value = task.fn(*job.args, **job.kwargs)
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
                           where: _InThread | None) -> tuple[Any, BaseException | None]:
    if where is not None:
        where.loop, where.task = asyncio.get_running_loop(), asyncio.current_task()
    return await _contained(task, job)


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
        except asyncio.CancelledError as exc:
            if _ours():  # the worker is stopping: let the cancellation through
                raise
            return failure(task, exc, time.monotonic() - started)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit...: a failure
            return failure(task, exc, time.monotonic() - started)
        finally:
            leave(token)
        return success(task, value, time.monotonic() - started)
    try:
        # Wrapped: an asyncio task re-raises KeyboardInterrupt and SystemExit into the loop
        # that runs it, which would stop the worker (or the child) with the task's status.
        inner = asyncio.get_running_loop().create_task(_contained(task, job),
                                                       name=JOB_TASK_PREFIX + job_label(job))
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
    value, error = inner.result()
    if error is not None:
        return failure(task, error, duration)
    return success(task, value, duration)


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
