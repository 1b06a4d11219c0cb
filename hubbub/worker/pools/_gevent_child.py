"""The gevent child: greenlets in a process that monkey-patched itself before anything else.

Imported only by a child started with ``GEVENT_BOOT`` (:mod:`hubbub.worker.pools.gevent`),
after ``monkey.patch_all()``: the protocol socket, ``time.sleep`` and every socket a task
opens are then cooperative, so up to ``slots`` sync tasks wait on I/O at the same time.

Time limits are ``gevent.Timeout``\\ s raised inside the task's greenlet at its next yield:
``SoftTimeLimitExceeded`` at the soft limit, ``TaskTimedOut`` at the hard one (reported as
timed out). A greenlet that never yields (CPU, a C call) cannot be interrupted: the parent
kills the child shortly after the hard limit.

``async def`` tasks each get an event loop in a real OS thread of gevent's thread pool
(``asyncio.run`` there, with the async pool's limits), because an asyncio loop and the gevent
hub cannot share one thread; they run concurrently with the greenlets.

``Cancel`` (a terminate) raises ``TerminateRequested`` in a sync task's greenlet at its next
yield, or cancels an ``async def`` task's coroutine on its loop. One that does not stop (it
never yields) is stopped by the parent killing the child a second later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

# gevent ships no type information; without the extra installed the import is not found.
import gevent  # type: ignore[import-untyped,import-not-found,unused-ignore]
import gevent.lock  # type: ignore[import-untyped,import-not-found,unused-ignore]
import gevent.monkey  # type: ignore[import-untyped,import-not-found,unused-ignore]
import gevent.pool  # type: ignore[import-untyped,import-not-found,unused-ignore]

from hubbub.context import set_default_sink
from hubbub.errors import SoftTimeLimitExceeded, TaskTimedOut
from hubbub.hub import Hub
from hubbub.job import Failed, Job, Outcome, TimedOut
from hubbub.task import Task
from hubbub.worker.execute import limits, on_own_loop, run_sync
from hubbub.worker.pools._child import reply, rss_for, unknown_task
from hubbub.worker.pools._wire import Cancel, ChildSpec, Progress, Ready, Run, encode, receive
from hubbub.worker.stopping import Stoppable, TerminateRequested

ASYNC_THREADS = 32  # at most this many async def tasks run at once (one loop thread each)


def serve(sock: socket.socket, hub: Hub, spec: ChildSpec) -> None:
    """Serve jobs as greenlets until ``stop`` (or exit at once when the parent is gone)."""
    me = os.getpid()
    sending = gevent.lock.Semaphore()
    greenlets = gevent.pool.Pool(spec.slots)
    gevent.get_hub().threadpool.maxsize = min(spec.slots, ASYNC_THREADS)

    def send(frame: bytes) -> None:
        with sending:  # one frame at a time on the socket
            sock.sendall(frame)

    hub_loop = gevent.get_hub().loop
    native_ident = gevent.monkey.get_original("_thread", "get_ident")
    main = native_ident()

    def progress(task_id: str, state: str, meta: dict[str, Any] | None) -> None:
        frame = encode(Progress(task_id, state, meta))
        if native_ident() == main:  # a greenlet on the hub's own (patched) thread
            with contextlib.suppress(OSError):
                send(frame)
        else:  # an async def task on a real thread: hand it to the hub
            hub_loop.run_callback_threadsafe(_send_quietly, send, frame)

    set_default_sink(progress)

    running: dict[int, Stoppable] = {}  # by the parent's number, for Cancel

    def run(seq: int, job: Job) -> None:
        task = hub.tasks.get(job.task)
        stop = running[seq] = Stoppable(job)
        try:
            if task is None:
                outcome = unknown_task(hub, job)
            elif task.is_async:
                outcome = gevent.get_hub().threadpool.apply(_run_async, (task, job, stop))
            else:
                outcome = _run_green(task, job, stop)
        finally:
            del running[seq]
        if os.getpid() != me:
            # A task forked (gevent copies every greenlet into the new process) and returned
            # there: that process is not this child (its socket is closed) and ends here.
            os._exit(0)
        with contextlib.suppress(ConnectionError):  # the parent is gone: main notices, exits
            send(reply(seq, outcome, rss_for(spec)))

    send(encode(Ready(os.getpid())))
    while True:
        try:
            frame = receive(sock)
        except (EOFError, OSError) as exc:
            if os.getpid() != me:
                # A process a task forked, whose socket was closed: let the task go on until
                # it returns (``run`` ends the process then) or exits.
                greenlets.join()
                os._exit(0)
            if not isinstance(exc, EOFError | ConnectionError):
                raise
            # Nobody can receive outcomes any more; deliveries come back after the lease.
            logging.shutdown()
            os._exit(0)
        if isinstance(frame, Cancel):
            cancelled = running.get(frame.seq)  # None: it has ended, its Done is on its way
            if cancelled is not None:
                cancelled.terminate(frame.reason)
            continue
        if not isinstance(frame, Run):
            break  # Stop: after the spec, the parent sends only Run, Cancel and Stop
        greenlets.spawn(run, frame.seq, frame.job)
    greenlets.join()


def _run_async(task: Task[Any, Any], job: Job, stop: Stoppable) -> Outcome:
    return asyncio.run(on_own_loop(task, job, stop))


def _throw_in(green: Any, stop: Stoppable) -> Any:
    """How to stop a job running in greenlet ``green``: raise ``TerminateRequested`` in it
    from the hub, unless the job has ended by then. The job's greenlet calls ``stop.end()``
    before its next yield, so the exception can only land inside the task."""
    def deliver(reason: str) -> None:  # in the hub, on the job's own thread
        if not stop.over:
            green.throw(TerminateRequested(reason))

    return lambda reason: gevent.get_hub().loop.run_callback(deliver, reason)


def _run_green(task: Task[Any, Any], job: Job, stop: Stoppable) -> Outcome:
    if stop.terminated:  # terminated before it started
        stop.end()
        return stop.outcome()
    stop.arm(_throw_in(gevent.getcurrent(), stop))
    soft, hard = limits(job)
    timers = []
    if soft is not None:
        timers.append(gevent.Timeout(soft, SoftTimeLimitExceeded(
            f"soft time limit ({soft}s) exceeded")))
    if hard is not None:
        timers.append(gevent.Timeout(hard, TaskTimedOut(f"time limit ({hard}s) exceeded")))
    started = time.monotonic()
    for timer in timers:
        timer.start()
    try:
        outcome = run_sync(task, job)
    finally:
        for timer in timers:
            timer.close()
        terminated = stop.end()  # before anything that may yield
    if terminated:
        return stop.outcome()
    duration = time.monotonic() - started
    if (hard is not None and duration >= hard and isinstance(outcome, Failed)
            and outcome.error.type == "TaskTimedOut"):
        return TimedOut(hard, duration)
    return outcome


def _send_quietly(send: Callable[[bytes], None], frame: bytes) -> None:
    with contextlib.suppress(OSError):
        send(frame)
