"""The child side of the process pools: ``python -c BOOT <fd>`` ends up in :func:`main`.

A child reads its :class:`~hubbub.worker.pools._wire.ChildSpec`, imports the app the way the
CLI did (``module:attr``), says ``ready``, then serves jobs until ``stop`` or EOF:

- ``serial`` (prefork): one job at a time in the main thread. A soft limit is a SIGALRM whose
  handler raises ``SoftTimeLimitExceeded`` inside the task; the hard limit belongs to the
  parent, which kills this process. ``async def`` tasks get a fresh loop per job.
- ``asyncio`` (hybrid): ``async def`` jobs on an ``AsyncPool`` on this process's own loop,
  with its limits; sync jobs in :class:`~hubbub.worker.pools._sync_threads.SyncThreads`, with
  the same limits, which sends their outcomes back to the loop in batches. ``Cancel``
  terminates a job the way the async pool does (cancel the coroutine, raise in the thread).
- ``gevent``: greenlets; see :mod:`hubbub.worker.pools._gevent_child`.

SIGINT is ignored from the first line of ``BOOT`` on: Ctrl-C in a terminal reaches the whole
process group, and only the parent decides how the worker stops.

A task may fork (``os.fork``, ``multiprocessing`` with fork). The forked process must not keep
the socket: the parent reads EOF on it to learn that this child died, and a grandchild that
holds it would hide the death. So the socket is closed in every process forked from here
(``os.register_at_fork``), and a grandchild that returns from the task exits instead of
serving: in prefork and hybrid (on the loop) here, in hybrid's threads in ``SyncThreads``,
in gevent in :mod:`~hubbub.worker.pools._gevent_child`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any

from hubbub._loader import load_hub
from hubbub.context import set_default_sink
from hubbub.errors import ConfigurationError, ErrorKind, SoftTimeLimitExceeded
from hubbub.hub import Hub
from hubbub.job import Crashed, Failed, Job, Outcome, Terminated
from hubbub.logs import configure
from hubbub.results.base import ErrorInfo
from hubbub.task import Task
from hubbub.worker import fewer_collections, run_on
from hubbub.worker.execute import limits, on_own_loop, run_sync
from hubbub.worker.outcome_of import describe, exception_text, failure
from hubbub.worker.pools._sync_threads import SyncThreads
from hubbub.worker.pools._wire import (
    CHUNK,
    Cancel,
    ChildSpec,
    Frame,
    FrameReader,
    Leaving,
    LoadFailed,
    Outbox,
    Progress,
    Ready,
    Run,
    encode,
    encode_done,
    receive,
    resident_mib,
)
from hubbub.worker.pools.coroutines import SYNC_THREADS, AsyncPool

BOOT = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "from hubbub.worker.pools._child import main; main()")

log = logging.getLogger("hubbub.worker.child")


def main() -> None:
    """Entry point of a child: the socket's file descriptor is ``sys.argv[1]``."""
    sock = socket.socket(fileno=int(sys.argv[1]))

    def forked() -> None:  # in a process a task forked: give up the worker's socket
        with contextlib.suppress(OSError):
            os.close(sock.detach())

    os.register_at_fork(after_in_child=forked)
    try:
        spec = receive(sock)
    except EOFError:
        return
    if not isinstance(spec, ChildSpec):
        raise ValueError(f"a child's first frame must be its ChildSpec, got {spec!r:.100}")
    sys.path[:] = list(spec.sys_path)
    if spec.log_level is not None:
        configure(spec.log_level, spec.log_format, spec.log_file, child=True)
    try:
        hub = load_hub(spec.import_path)
        follow_worker(hub, spec)
        hub.hooks.start_process()  # before Ready: a child without its hooks serves nothing
    except Exception as exc:
        # A failing hook's ConfigurationError already names the hook and its error.
        text = str(exc) if isinstance(exc, ConfigurationError) else exception_text(exc)
        sock.sendall(encode(LoadFailed(text)))
        sock.close()
        return
    try:
        if spec.mode == "serial":
            _serve_serial(sock, hub, spec)
        elif spec.mode == "asyncio":
            with fewer_collections():  # as in the worker: many short tasks in flight
                run_on(spec.loop, lambda: _serve_asyncio(sock, hub, spec))
        elif spec.mode == "gevent":
            # gevent is an optional extra, imported only by children that BOOT patched first.
            importlib.import_module("hubbub.worker.pools._gevent_child").serve(sock, hub, spec)
        else:
            raise ValueError(f"unknown child mode {spec.mode!r}")
    finally:
        hub.hooks.stop_process()
        hub.close()
        sock.close()


def follow_worker(hub: Hub, spec: ChildSpec) -> None:
    """Point the child's hub at the worker's broker and result store when the app module
    configured others (a test fixture re-pointed the worker's hub): what a task sends from
    here must reach the queues this worker serves."""
    results = None if spec.results == "none" else spec.results
    if spec.broker is None or (spec.broker, results) == (hub.settings.broker,
                                                         hub.settings.results):
        return
    hub.configure(broker=spec.broker, results=spec.results)


def rss_for(spec: ChildSpec) -> float:
    """This child's resident MiB for a ``Done`` frame: read only when there is a memory
    limit (reading ``/proc`` after every task is not free), else 0.0."""
    return resident_mib() if spec.max_memory is not None else 0.0


def reply(seq: int, outcome: Outcome, rss: float) -> bytes:
    """The ``Done`` frame for a job; an outcome that cannot be pickled (a value too deep, or
    of a type pickle refuses) becomes a ``ResultNotEncodable`` failure, which always can."""
    try:
        return encode_done(seq, outcome, rss)
    except BaseException as exc:  # pickling runs the value's own hooks
        error = ErrorInfo(ErrorKind.NOT_ENCODABLE, "the outcome cannot be sent to the worker: "
                          + exception_text(exc))
        return encode_done(seq, Failed(error, outcome.duration), rss)


class _Inbox:
    """The frames a serial child has received and not yet handled, read in chunks (one
    ``recv`` takes every frame the parent has written)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader()
        self.frames: collections.deque[Frame] = collections.deque()

    def next(self) -> Frame:
        """The next frame, waiting for one.

        Raises:
            EOFError: the parent closed the socket.
        """
        while not self.frames:
            data = self.sock.recv(CHUNK)
            if not data:
                raise EOFError("the parent closed the socket")
            self.frames.extend(self.reader.feed(data))
        return self.frames.popleft()

    def cancelled(self, seq: int) -> str | None:
        """Why job ``seq`` (queued, about to start) was cancelled, if the parent has sent a
        ``Cancel`` for it by now; looks at the socket without waiting."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            data = self.sock.recv(CHUNK, socket.MSG_DONTWAIT)
            if not data:
                return None  # EOF: the next read says so
            self.frames.extend(self.reader.feed(data))
        for frame in self.frames:
            if isinstance(frame, Cancel) and frame.seq == seq:
                return frame.reason
        return None


def unknown_task(hub: Hub, job: Job) -> Outcome:
    error = ErrorInfo("ConfigurationError", f"task {job.task!r} is not registered in "
                      f"{hub.import_path} as imported by the child process")
    return Failed(error, 0.0)


# -- serial (prefork) ----------------------------------------------------------------------

def _serve_serial(sock: socket.socket, hub: Hub, spec: ChildSpec) -> None:
    me = os.getpid()
    sock.sendall(encode(Ready(me)))

    def progress(task_id: str, state: str, meta: dict[str, Any] | None) -> None:
        # From the task, on this thread, between this child's other sends: never at once.
        with contextlib.suppress(OSError):
            sock.sendall(encode(Progress(task_id, state, meta)))

    set_default_sink(progress)
    inbox = _Inbox(sock)
    while True:
        try:
            frame = inbox.next()
        except (EOFError, ConnectionError):
            return  # the parent is gone
        if isinstance(frame, Cancel):
            continue  # for a job that has run: its Done is sent already
        if not isinstance(frame, Run):
            return  # Stop: after the spec, the parent sends only Run, Cancel and Stop
        seq, job = frame.seq, frame.job
        task = hub.tasks.get(job.task)
        started = time.monotonic()
        escaped = False
        # A job queued behind others may have been terminated while it waited.
        skipped = inbox.cancelled(seq)
        try:
            if skipped is not None:
                outcome: Outcome = Terminated(skipped, 0.0)
            elif task is None:
                outcome = unknown_task(hub, job)
            else:
                outcome = _run_serial(task, job)
        except BaseException as exc:  # the runners contain what tasks raise: a bug of ours
            with contextlib.suppress(BaseException):
                traceback.print_exc()
            escaped = True
            outcome = Crashed(f"child {me} exited because task {job.task} raised "
                              f"{exception_text(exc)}", time.monotonic() - started)
        if os.getpid() != me:
            # The task forked and returned in the forked process too: that one is not this
            # child (its socket is closed) and must not serve; it ends here.
            os._exit(0)
        try:
            rss = rss_for(spec)
            sock.sendall(reply(seq, outcome, rss))
        except ConnectionError:
            return
        if ((spec.max_memory is not None and rss > spec.max_memory)
                or (isinstance(outcome, Failed) and outcome.error.type == "MemoryError")):
            # To be recycled: the jobs queued behind this one go to another child.
            with contextlib.suppress(OSError):
                sock.sendall(encode(Leaving()))
            return
        if escaped:
            return  # its state is unknown: the parent starts a fresh child


def _run_serial(task: Task[Any, Any], job: Job) -> Outcome:
    soft, _ = limits(job)
    if job.timeout is not None:
        # The parent kills this process at the hard limit; here only the soft one matters.
        # (Without one, the job is as it came: a copy per task is not free.)
        job = dataclasses.replace(job, soft_timeout=soft, timeout=None)
    if task.is_async:
        return asyncio.run(on_own_loop(task, job))
    if soft is None:
        return run_sync(task, job)

    def soft_limit_reached(signum: int, frame: FrameType | None) -> None:
        raise SoftTimeLimitExceeded(f"soft time limit ({soft}s) exceeded")

    started = time.monotonic()
    outcome: Outcome | None = None
    previous = signal.signal(signal.SIGALRM, soft_limit_reached)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, soft)
            outcome = run_sync(task, job)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    except SoftTimeLimitExceeded as exc:  # the alarm fired just as the task returned
        if outcome is None:
            outcome = failure(task, exc, time.monotonic() - started)
    return outcome


# -- asyncio (hybrid) ----------------------------------------------------------------------

async def _serve_asyncio(sock: socket.socket, hub: Hub, spec: ChildSpec) -> None:
    me = os.getpid()
    pool = AsyncPool(spec.slots, block_warning=spec.block_warning)  # its async def jobs
    await pool.start(hub)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    outbox = Outbox(writer)  # replies finishing in one turn of the loop go out together

    def answer(seq: int, outcome: Outcome) -> None:
        outbox.put(reply(seq, outcome, rss_for(spec)))

    # Sync jobs: in threads, their outcomes (and progress) back through one mailbox.
    threads = SyncThreads(min(spec.slots, SYNC_THREADS), answer, outbox.put)
    running: set[asyncio.Task[None]] = set()  # async def jobs
    jobs: dict[int, Job] = {}  # async def jobs by the parent's number, for Cancel

    async def run(seq: int, job: Job) -> None:
        jobs[seq] = job
        try:
            outcome = await pool.run(job)
        except Exception as exc:  # a bug in the pool must not take the others down
            outcome = Failed(describe(exc), 0.0)
        finally:
            del jobs[seq]
        if os.getpid() != me:
            # An async def task forked on this loop and returned in the forked process too:
            # that one is not this child (its socket is closed) and ends here. (One forked
            # from a thread ends in the thread: SyncThreads.)
            os._exit(0)
        answer(seq, outcome)

    loop_thread = threading.get_ident()

    def progress(task_id: str, state: str, meta: dict[str, Any] | None) -> None:
        # In order with the replies (a task's progress always before its Done): from a
        # coroutine, into the outbox now; from a sync task's thread, through the mailbox its
        # outcome takes.
        frame = encode(Progress(task_id, state, meta))
        if threading.get_ident() == loop_thread:
            outbox.put(frame)
        else:
            threads.post(frame)

    async def handle(frame: Frame) -> bool:
        """Act on one frame from the parent; False for ``Stop``."""
        if isinstance(frame, Cancel):
            # Neither: it has ended, and its Done is on its way.
            if not threads.cancel(frame.seq, frame.reason):
                cancelled = jobs.get(frame.seq)
                if cancelled is not None:
                    await pool.cancel(cancelled.id, frame.reason)
            return True
        if not isinstance(frame, Run):
            return False  # Stop: after the spec, the parent sends only Run, Cancel and Stop
        task = hub.tasks.get(frame.job.task)
        if task is None:
            answer(frame.seq, unknown_task(hub, frame.job))
        elif not task.is_async:
            threads.run(frame.seq, frame.job, task)
        else:
            runner = asyncio.create_task(run(frame.seq, frame.job))
            running.add(runner)
            runner.add_done_callback(running.discard)
        return True

    set_default_sink(progress)
    writer.write(encode(Ready(os.getpid())))
    frames = FrameReader()
    parent_gone = False
    try:
        serving = True
        while serving:
            try:
                data = await reader.read(CHUNK)
            except ConnectionError:
                data = b""
            if not data:
                parent_gone = True
                break
            for frame in frames.feed(data):
                serving = serving and await handle(frame)
        if not parent_gone:
            if running:
                await asyncio.wait(running)
            await threads.wait()
    finally:
        threads.close()
        await pool.stop()
        outbox.flush()
        with contextlib.suppress(ConnectionError):
            writer.close()
            await writer.wait_closed()
    if parent_gone and (running or threads.open):
        # Nobody can receive these outcomes, and threads of sync tasks would hold the exit;
        # their deliveries come back to another worker when the dead parent's lease ends.
        logging.shutdown()
        os._exit(0)
