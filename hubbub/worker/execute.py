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

Terminating (a revoke with ``terminate=True``, through ``Pool.cancel``) reuses the same means:
a pool tracks each running job in a :class:`Stoppable` (:class:`Running` finds it by id), the
runner arms it with how to stop the job, and the terminate and the job's own end race for it:
the first one wins, so a job has exactly one outcome, ``Terminated`` if the terminate won.
On the event loop the coroutine's task is cancelled (and that cancel undone afterwards, so it
is told apart from a stop of the worker); in a thread :class:`TerminateRequested` is raised
at its next Python instruction and the job is reported terminated at once (one stuck in a C
call keeps its thread until the call returns, as with ``timeout``).

Containment: whatever a task raises is its failure, ``BaseException`` subclasses included
(``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``): none of them may stop a worker or
a child. The one exception is ``asyncio.CancelledError`` when the cancellation is ours (a time
limit, or the worker stopping): that one propagates. Describing an exception never raises
(:func:`describe`), and a returned value is checked with the codec results are stored with
(:func:`success`), so every outcome a pool reports can be sent and stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from hubbub.codecs import Unencodable, explain, json_dumps, pack
from hubbub.context import TaskContext, enter, leave
from hubbub.errors import ErrorKind, Reject, Retry, SoftTimeLimitExceeded, TaskTimedOut
from hubbub.job import Failed, Job, Outcome, Rejected, Succeeded, Terminated, TimedOut
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


class TerminateRequested(BaseException):
    """Raised inside a task's thread or greenlet when it is revoked with ``terminate=True``.

    A ``BaseException``, like ``KeyboardInterrupt``, so that a task's ``except Exception``
    does not swallow it. Whatever the task does with it, its outcome is ``Terminated``.
    """


class Stoppable:
    """One running job, as ``Pool.cancel`` sees it: a terminate and the job's own end race,
    and the first one wins.

    The code that runs the job tells it how to stop the job once it runs (``arm``) and calls
    ``end`` when the job is over, before it reports (or sends) anything; ``terminate`` may
    come from another thread. The winner is decided by one ``dict.setdefault``, atomic in CPython,
    instead of a lock: in a gevent child locks are greenlet locks, and its ``async def`` jobs
    run in real threads.

    Args:
        job: the job it stands for.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self.reason = ""
        self.started = time.monotonic()
        self.over = False  # ``end`` was called: set and read on the job's own thread
        self.cancelled = False  # an on-loop job's task was cancelled by us (see _cancel_task)
        self._winner: dict[str, str] = {}
        self._fired: dict[str, object] = {}
        self._stop: Callable[[str], None] | None = None
        self._task: asyncio.Task[Any] | None = None  # an on-loop job: cancelled to stop it

    @property
    def terminated(self) -> bool:
        """Whether a terminate won (or may still win: the job has not ended)."""
        return self._winner.get("first") == "terminate"

    def arm(self, stop: Callable[[str], None]) -> None:
        """Tell how to stop the job (called with the reason, once, from any thread)."""
        self._stop = stop
        if self.terminated:  # a terminate came while the job was being set up
            self._fire()

    def arm_task(self, target: asyncio.Task[Any]) -> None:
        """The job runs in asyncio task ``target``: stop it by cancelling that task (the
        canceller is built only if a terminate comes: this is every async job's path)."""
        self._task = target
        if self.terminated:
            self._fire()

    def terminate(self, reason: str) -> bool:
        """Stop the job unless it has ended.

        Returns:
            True if the terminate won: the job's outcome is ``Terminated`` (see ``end``).
        """
        if not self.reason:
            self.reason = reason  # before the race: whoever sees "terminate" sees the reason
        if self._winner.setdefault("first", "terminate") != "terminate":
            return False
        self._fire()
        return True

    def end(self) -> bool:
        """The job is over; True if a terminate came first (report ``outcome()``)."""
        self.over = True
        return self._winner.setdefault("first", "end") == "terminate"

    def outcome(self) -> Terminated:
        return Terminated(self.reason, time.monotonic() - self.started)

    def _fire(self) -> None:
        stop, me = self._stop, object()
        if stop is None and self._task is not None:
            stop = _cancel_task(self._task, self)
        # ``arm`` and ``terminate`` may both get here (from two threads): stop once.
        if stop is not None and self._fired.setdefault("stop", me) is me:
            stop(self.reason)


class Running:
    """The jobs a pool (or a child) runs now, by id, so that ``Pool.cancel`` finds them.

    The same id can run twice at once (a redelivered message): a terminate stops both.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, list[Stoppable]] = {}

    def add(self, job: Job) -> Stoppable:
        """A ``Stoppable`` for ``job``, which starts now; ``remove`` it when it is over (a
        pair of calls, not a context manager: this is every job's path)."""
        stop = Stoppable(job)
        same = self._jobs.get(job.id)
        if same is None:
            self._jobs[job.id] = [stop]
        else:
            same.append(stop)
        return stop

    def remove(self, stop: Stoppable) -> None:
        same = self._jobs[stop.job.id]
        same.remove(stop)
        if not same:
            del self._jobs[stop.job.id]

    def terminate(self, job_id: str, reason: str) -> bool:
        """Stop every running job ``job_id``; True if one was running and will be stopped."""
        won = [stop.terminate(reason) for stop in list(self._jobs.get(job_id, ()))]
        return any(won)


def _cancel_task(target: asyncio.Task[Any], stop: Stoppable) -> Callable[[str], None]:
    """How to stop a job running in ``target``: cancel it on its own loop, from any thread,
    unless the job has ended by then (``target`` may be the caller's task, which lives on)."""
    loop = target.get_loop()

    def deliver(reason: str) -> None:  # on the loop, where the runner calls ``end`` too
        if not stop.over:
            stop.cancelled = True
            target.cancel(reason)

    def request(reason: str) -> None:
        with contextlib.suppress(RuntimeError):  # its loop has closed: the job is over
            loop.call_soon_threadsafe(deliver, reason)

    return request


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


def _raise_in(thread: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in ``thread`` at its next Python instruction (None: take back one
    that has not been raised yet)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread),
                                               None if exc_type is None
                                               else ctypes.py_object(exc_type))


@dataclass
class _InThread:
    """Where a job runs in a thread, so that its time limits and a terminate can reach it.

    Invariant: an exception is raised in the thread only while the task's own function runs
    (between ``enter`` and ``leave``), never in hubbub's code around it nor once the thread
    serves other jobs: ``interrupt``, ``enter``, ``leave`` and ``finish`` hold ``lock``, an
    interrupt that comes before the task starts waits for it (``pending``), and ``leave`` takes
    back one that was requested but has not landed.
    """

    thread: int | None = None
    loop: asyncio.AbstractEventLoop | None = None  # an ``async def`` job's private loop
    task: asyncio.Task[Any] | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    interrupted: bool = False
    pending: type[BaseException] | None = None  # asked for before the task started
    in_task: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def interrupt(self, exc_type: type[BaseException]) -> None:
        """Stop the job: cancel a coroutine (even mid-``select``), else raise in the thread."""
        with self.lock:
            if self.finished.is_set():
                return
            self.interrupted = True
            if self.loop is not None and self.task is not None:
                with contextlib.suppress(RuntimeError):  # its loop just closed: it is over
                    self.loop.call_soon_threadsafe(self.task.cancel, exc_type.__name__)
            elif self.in_task and self.thread is not None:
                _raise_in(self.thread, exc_type)
            else:
                self.pending = exc_type

    def enter(self) -> None:
        """The task's function starts now (in its thread).

        Raises:
            BaseException: the interrupt that came before it started.
        """
        with self.lock:
            if self.pending is not None:
                raise self.pending("stopped before the task started")
            self.in_task = True

    def leave(self) -> None:
        """The task's function has returned or raised."""
        with self.lock:
            self.in_task = False
            if self.interrupted and self.thread is not None:
                _raise_in(self.thread, None)

    def attach(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any] | None) -> None:
        """An ``async def`` job's loop runs now: later interrupts cancel its task.

        Raises:
            asyncio.CancelledError: an interrupt came before its loop started.
        """
        with self.lock:
            if self.pending is not None:
                raise asyncio.CancelledError(self.pending.__name__)
            self.loop, self.task = loop, task

    def finish(self) -> None:
        """Called by the job's thread when the job is over, before it takes other work."""
        with self.lock:
            self.finished.set()
            self.in_task = False
            if self.interrupted and self.thread is not None:
                _raise_in(self.thread, None)


def run_sync(task: Task[Any, Any], job: Job, where: _InThread | None = None) -> Outcome:
    """Run a job to completion in the calling thread (``async def`` gets its own loop)."""
    token = enter(context_of(job))
    started = time.monotonic()
    try:
        if task.is_async:
            value, error = asyncio.run(_on_private_loop(task, job, where))
            if error is not None:
                return failure(task, error, time.monotonic() - started)
        elif where is None:
            value = task.fn(*job.args, **job.kwargs)
        else:
            where.enter()
            try:
                value = task.fn(*job.args, **job.kwargs)
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
                           where: _InThread | None) -> tuple[Any, BaseException | None]:
    if where is not None:
        where.attach(asyncio.get_running_loop(), asyncio.current_task())
    return await _contained(task, job)


def limits(job: Job) -> tuple[float | None, float | None]:
    """(soft, hard) limits; a soft limit at or past the hard one is moot."""
    soft, hard = job.soft_timeout, job.timeout
    if soft is not None and hard is not None and soft >= hard:
        soft = None
    return soft, hard


async def on_loop(task: Task[Any, Any], job: Job, stop: Stoppable | None = None) -> Outcome:
    """Run an ``async def`` job as a coroutine on the running loop, with its time limits.

    With ``stop``, a terminate cancels the coroutine; the outcome is then ``Terminated``.
    """
    soft, hard = limits(job)
    token = enter(context_of(job))
    started = time.monotonic()
    if soft is None and hard is None:  # the common case: no second task, no timers
        me = asyncio.current_task()
        if stop is not None and me is not None:
            stop.arm_task(me)
        error: BaseException | None = None
        try:
            value = await task.fn(*job.args, **job.kwargs)
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
    where = _InThread()

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


async def _in_thread_limited(future: asyncio.Future[Outcome], where: _InThread,
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
