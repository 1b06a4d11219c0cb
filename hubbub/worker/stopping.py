"""Stopping a running job: a terminate, or a time limit that has to reach into a thread.

Terminating (a revoke with ``terminate=True``, through ``Pool.cancel``): a pool tracks each
running job in a :class:`Stoppable` (:class:`Running` finds it by id), the runner
(:mod:`hubbub.worker.execute`) arms it with how to stop the job, and the terminate and the
job's own end race for it: the first one wins, so a job has exactly one outcome,
``Terminated`` if the terminate won. On the event loop the coroutine's task is cancelled (and
that cancel undone afterwards, so it is told apart from a stop of the worker); in a thread
:class:`TerminateRequested` is raised at its next Python instruction and the job is reported
terminated at once (one stuck in a C call keeps its thread until the call returns, as with
``timeout``).

A job in a thread is reached through :class:`InThread`, which the time limits use too
(``SoftTimeLimitExceeded``, ``TaskTimedOut``): an exception is raised in the thread only while
the task's own function runs, never in hubbub's code around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hubbub.job import Job, Terminated


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

    __slots__ = ("_race", "_stop", "_task", "cancelled", "job", "over", "reason", "started")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.reason = ""
        self.started = time.monotonic()
        self.over = False  # ``end`` was called: set and read on the job's own thread
        self.cancelled = False  # an on-loop job's task was cancelled by us (see _cancel_task)
        # Two races, one key each: "first" (terminate or end), "stop" (who fires the stop).
        # One dict for both: every job makes one.
        self._race: dict[str, object] = {}
        self._stop: Callable[[str], None] | None = None
        self._task: asyncio.Task[Any] | None = None  # an on-loop job: cancelled to stop it

    @property
    def terminated(self) -> bool:
        """Whether a terminate won (or may still win: the job has not ended)."""
        return self._race.get("first") == "terminate"

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
        if self._race.setdefault("first", "terminate") != "terminate":
            return False
        self._fire()
        return True

    def end(self) -> bool:
        """The job is over; True if a terminate came first (report ``outcome()``)."""
        self.over = True
        return self._race.setdefault("first", "end") == "terminate"

    def outcome(self) -> Terminated:
        return Terminated(self.reason, time.monotonic() - self.started)

    def _fire(self) -> None:
        stop, me = self._stop, object()
        if stop is None and self._task is not None:
            stop = _cancel_task(self._task, self)
        # ``arm`` and ``terminate`` may both get here (from two threads): stop once.
        if stop is not None and self._race.setdefault("stop", me) is me:
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


def _raise_in(thread: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in ``thread`` at its next Python instruction (None: take back one
    that has not been raised yet)."""
    import ctypes  # here: about 150 KiB that most workers never need (SQLite's inotify aside)

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread),
                                               None if exc_type is None
                                               else ctypes.py_object(exc_type))


@dataclass
class InThread:
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
    finished: bool = False  # under ``lock``: set by ``finish``
    interrupted: bool = False
    pending: type[BaseException] | None = None  # asked for before the task started
    in_task: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def interrupt(self, exc_type: type[BaseException]) -> None:
        """Stop the job: cancel a coroutine (even mid-``select``), else raise in the thread."""
        with self.lock:
            if self.finished:
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
            self.finished = True
            self.in_task = False
            if self.interrupted and self.thread is not None:
                _raise_in(self.thread, None)
