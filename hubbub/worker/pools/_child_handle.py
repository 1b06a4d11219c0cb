"""The parent's handle on one child process of a process pool: ``Child``.

A ``Child`` starts its process, sends it jobs, reads its replies, watches its exit (and its
memory, with a limit) and settles its jobs when it goes away. Which children serve, and
their replacement and recycling, are :mod:`hubbub.worker.pools._children`'s.

How a child is started: ``python -c BOOT <fd>`` (``subprocess`` with the socket passed in
``pass_fds``), a fresh interpreter that imports the app by its import path. See
:mod:`hubbub.worker.pools.prefork` for why this start method and not fork or forkserver.

Invariants:

- a job sent to a child resolves exactly once: with the child's ``done`` reply, or when the
  child's socket reaches EOF (it died, or was killed at a hard limit or for a terminate), with
  ``TimedOut`` for the job whose limit killed it, ``Terminated`` for a job being terminated,
  and ``Crashed`` (naming the signal or exit code) for the rest, except queued jobs;
- a serial (prefork) child may hold queued jobs behind the one it runs (its window, see
  :class:`~hubbub.worker.pools._children.Children`). It runs them in the order sent and
  answers each before starting the next, so the parent knows which one runs: the oldest
  unanswered. A queued job's hard-limit timer starts when it becomes that one. If the child
  dies, only the running job gets an outcome from the death; the queued ones never started
  and go to ``on_requeue`` (run elsewhere, never lost, never run twice knowingly). A queued
  job being terminated is sent ``Cancel`` (the child skips it); if it has started by the time
  it is the oldest and is still unanswered ``QUEUED_CANCEL_GRACE`` seconds later, the child is
  killed as for a running one;
- a terminate kills a child with no grace (prefork) at once; otherwise it sends ``Cancel``
  and kills the child only if the job is still unanswered ``limit_grace`` seconds later;
- ``on_exit`` is called once, after the process was reaped and its jobs settled;
- the parent stops listening to a child's socket once the process has been reaped (after
  ``EOF_GRACE``), even when something else still holds the other end (a process the task
  forked): a child's death is learnt from its exit, not only from EOF;
- with a ``memory_limit``, a busy child's resident memory is read every ``MEMORY_INTERVAL``
  seconds and a child over the limit is killed mid-task.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hubbub.context import report
from hubbub.job import Crashed, Job, Outcome, Terminated, TimedOut
from hubbub.worker.pools._wire import (
    CHUNK,
    Cancel,
    ChildSpec,
    Done,
    FrameReader,
    Leaving,
    LoadFailed,
    Outbox,
    Progress,
    Ready,
    Stop,
    encode,
    encode_run,
    read_frame,
    resident_mib_of,
)

# The folder the worker's hubbub was imported from. A child starts as ``python -c``, which
# looks in its working directory first, and imports hubbub before it takes the parent's
# sys.path: from here, not from a folder called hubbub that happens to be where it started.
_HUBBUB_ROOT = str(Path(__file__).resolve().parents[3])

log = logging.getLogger("hubbub.worker")

START_TIMEOUT = 60.0  # seconds a child may take to import the app and say ready
STOP_GRACE = 5.0  # seconds stop() waits for a child to exit before killing it
REAP_TIMEOUT = 5.0  # seconds after EOF before a child that closed its socket is killed
EOF_GRACE = 0.5  # seconds after a child was reaped before its socket is given up on
MEMORY_INTERVAL = 0.5  # seconds between reads of a busy child's RSS (with a memory limit)
QUEUED_CANCEL_GRACE = 0.5  # seconds a terminated queued job has to be skipped once it is next
TYPICAL_START = 0.01  # seconds: how long a child's tasks are taken to be before any answer
TYPICAL_WEIGHT = 0.5  # of each answer in that moving average (Child.window_size)


class StartFailed(Exception):
    """A child could not be started or could not load the app."""


@dataclass(eq=False, slots=True)
class _Pending:
    """A job sent to a child and not yet answered."""

    seq: int
    job: Job
    future: asyncio.Future[Outcome]
    started: float
    timer: asyncio.TimerHandle | None = None
    timed_out: bool = False
    terminating: str | None = None  # why it is being terminated (revoked with terminate=True)
    backstop: asyncio.TimerHandle | None = None  # kills the child if it does not stop in time
    queued: bool = False  # in a serial child's window, behind the job it runs

    def disarm(self) -> None:
        for timer in (self.timer, self.backstop):
            if timer is not None:
                timer.cancel()


def describe_exit(pid: int, code: int | None) -> str:
    """``"child 1234 died with signal SIGSEGV"`` and the like."""
    if code is None:
        return f"child {pid} closed its connection and was killed"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"child {pid} died with signal {name}"
    return f"child {pid} exited with code {code}"


class Child:
    """One child process, the parent's end of its socket, and the jobs it is running.

    Args:
        spec: what the child imports and how it serves.
        boot: the ``python -c`` program that starts it.
        limit_grace: seconds past a job's hard limit before the child is killed (0: exactly
            at the limit), and seconds a terminated job has to stop before the child is
            killed (0: the child is killed at once, without a ``Cancel``).
        on_done: called after each ``done`` reply.
        on_exit: called once, after the process was reaped and its jobs settled.
        memory_limit: resident MiB above which a busy child is killed (None: no watch).
        on_requeue: takes the queued jobs of a child that died before starting them (their
            futures still unresolved); None: they crash with it.
    """

    def __init__(self, spec: ChildSpec, boot: str, limit_grace: float,
                 on_done: Callable[[Child, Outcome], None],
                 on_exit: Callable[[Child], None], memory_limit: float | None = None,
                 on_requeue: Callable[[Job, asyncio.Future[Outcome]], None] | None = None
                 ) -> None:
        self.spec = spec
        self.boot = boot
        self.limit_grace = limit_grace
        self.memory_limit = memory_limit
        self.on_done = on_done
        self.on_exit = on_exit
        self.on_requeue = on_requeue
        self.serial = spec.mode == "serial"  # one job at a time, in the order sent
        self.last_duration = math.inf  # of the last job answered (none yet: not short)
        self.typical = TYPICAL_START  # moving average of the jobs' durations (window_size)
        self.pid = 0
        self.pending: dict[int, _Pending] = {}
        self.tasks_done = 0
        self.rss = 0.0
        self.retiring = False
        self.stopping = False
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._outbox: Outbox | None = None  # every frame after the spec goes through it
        self._reader: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._seq = itertools.count(1)
        self._culprit: _Pending | None = None  # the job whose hard limit killed the child
        self._terminated: _Pending | None = None  # the job that did not stop when terminated
        self._over_memory: str | None = None  # why the memory watch killed it
        self._stop_sent = False

    @property
    def free(self) -> int:
        return self.spec.slots - len(self.pending)

    def windowable(self, short: float, now: float | None = None) -> bool:
        """Whether this child's tasks are short: it answered one in under ``short`` seconds
        last, and the one it runs (if any) started less than ``short`` seconds ago (``now``:
        the loop's time, if the caller has it)."""
        if not self.serial or self.last_duration >= short or self._reader is None:
            return False
        if not self.pending:
            return True
        head = next(iter(self.pending.values()))
        if now is None:
            now = asyncio.get_running_loop().time()
        return now - head.started < short

    def window_size(self, window: int, short: float) -> int:
        """Queued jobs this child may hold while its tasks are short: about ``short`` seconds
        of them at the length of its tasks (the longer of its last one and ``typical``), at
        least 1 and at most ``window``. A job then waits in a window behind at most about
        ``short`` of work, however short the tasks are, and the shorter they are, the more
        jobs one hand-out carries (no-op tasks fill ``window``; 1 ms ones, ten at ``short`` =
        10 ms). The average (each reply weighs half) lets the window at most double per short
        reply (1, 2, 4... 64 over about six), so that one instant reply (an unknown task, an
        early failure) does not fill it at once, and a long task keeps it small for a while
        after."""
        length = max(self.last_duration, self.typical, 1e-9)
        return min(window, max(1, int(short / length)))

    def room(self, window: int, short: float, now: float | None = None) -> int:
        """Jobs this child may take now: its free slots, and its ``window_size`` of queued
        jobs while its tasks are short, so that a long task holds no queued job back."""
        room = self.spec.slots - len(self.pending)
        if window and self.pending and self.windowable(short, now):
            room += self.window_size(window, short)
        return room

    # -- life --------------------------------------------------------------------------------

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the process and wait until it has loaded the app.

        Raises:
            StartFailed: it exited, reported an error, or was not ready within ``timeout``.
        """
        parent_end, child_end = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", f"import sys; sys.path.insert(0, {_HUBBUB_ROOT!r}); "
                f"{self.boot}", str(child_end.fileno()),
                pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            parent_end.close()
            raise StartFailed(f"cannot start {sys.executable}: {exc}") from exc
        except BaseException:  # cancelled (the pool stopped while a child was replaced)
            parent_end.close()
            raise
        finally:
            child_end.close()
        self.pid = self._proc.pid
        try:
            reader, self._writer = await asyncio.open_unix_connection(sock=parent_end)
            self._writer.write(encode(self.spec))
            first = await asyncio.wait_for(read_frame(reader), timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            code = await self._reap()
            await self._close()
            raise StartFailed(describe_exit(self.pid, code) + " while starting") from None
        except TimeoutError:
            self.kill()
            await self._reap()
            await self._close()
            raise StartFailed(f"child {self.pid} was not ready within {timeout:.0f}s") from None
        except BaseException:  # cancelled while starting: leave no process behind
            if self._writer is None:
                parent_end.close()  # cancelled before the stream owned it
            self.kill()
            await self._reap()
            await self._close()
            raise
        if not isinstance(first, Ready):
            await self._reap()
            await self._close()
            raise StartFailed(first.message if isinstance(first, LoadFailed)
                              else f"child {self.pid} sent {first!r:.100} instead of Ready")
        self._outbox = Outbox(self._writer)
        self._reader = asyncio.create_task(self._read_forever(reader))
        self._watcher = asyncio.create_task(self._watch())

    async def wait(self) -> None:
        """Until the child has exited and its jobs are settled."""
        if self._reader is not None:
            await asyncio.shield(self._reader)

    def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    def send_stop(self) -> None:
        """Ask an idle child to exit."""
        if not self._stop_sent and self._outbox is not None and not self._writer_closing():
            self._stop_sent = True
            self._outbox.put(encode(Stop()))

    def _writer_closing(self) -> bool:
        return self._writer is None or self._writer.is_closing()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Exit now: idle children are asked, busy ones terminated; killed after ``grace``."""
        self.stopping = True
        if self._reader is None:
            return
        if self.pending:
            if self._proc is not None and self._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.terminate()
        else:
            self.send_stop()
        try:
            await asyncio.wait_for(self.wait(), grace)
        except TimeoutError:
            log.warning("child %d did not stop within %.0fs; killing it", self.pid, grace)
            self.kill()
            await self.wait()

    # -- jobs --------------------------------------------------------------------------------

    def submit(self, job: Job) -> asyncio.Future[Outcome]:
        """Send ``job``; the future resolves with its outcome, whatever becomes of the child.

        Raises:
            pickle.PicklingError, TypeError, AttributeError: the job cannot be sent.
        """
        assert self._outbox is not None, "child not started"
        seq = next(self._seq)
        frame = encode_run(seq, job)
        loop = asyncio.get_running_loop()
        pending = _Pending(seq, job, loop.create_future(), loop.time(),
                           queued=self.serial and bool(self.pending))
        if not pending.queued:
            self._starts(pending)
        idle = not self.pending
        self.pending[seq] = pending
        self._outbox.put(frame)
        if idle:
            # Nothing runs there: write at once rather than at the end of this loop turn,
            # which comes after the worker's next fetch is on its way (about 0.1 ms of a
            # pickup at a steady rate). A busy child's frames still go together.
            self._outbox.flush()
        return pending.future

    def _starts(self, pending: _Pending) -> None:
        """``pending`` runs from now on: its duration and its hard limit count from here."""
        loop = asyncio.get_running_loop()
        pending.queued = False
        pending.started = loop.time()
        if pending.job.timeout is not None:
            pending.timer = loop.call_later(pending.job.timeout + self.limit_grace,
                                            self._limit_reached, pending)
        if pending.terminating is not None and not pending.future.done():
            # Terminated while queued: the child skips it if the Cancel came first; if the
            # Cancel came too late, it runs, and is stopped the way a running job is.
            pending.backstop = loop.call_later(max(self.limit_grace, QUEUED_CANCEL_GRACE),
                                               self._overdue, pending)

    def _limit_reached(self, pending: _Pending) -> None:
        if pending.future.done() or pending.terminating is not None:
            return  # a terminated job has its own kill backstop
        pending.timed_out = True
        if self._culprit is None:
            self._culprit = pending
        log.warning("task %s[%s] ran past its hard time limit of %ss; killing child %d",
                    pending.job.task, pending.job.id, pending.job.timeout, self.pid)
        self.kill()

    def terminate(self, job_id: str, reason: str) -> list[asyncio.Future[Outcome]]:
        """Stop every job ``job_id`` this child runs; each ends ``Terminated`` unless it ends
        first. Without a grace the child is killed at once (prefork: one job per child);
        otherwise it is asked (``Cancel``) and killed ``limit_grace`` seconds later if the job
        is still unanswered.

        Returns:
            The futures of the jobs being stopped (none: it runs no such job).
        """
        stopping = [p for p in self.pending.values() if p.job.id == job_id
                    and not p.future.done() and not p.timed_out and p.terminating is None]
        loop = asyncio.get_running_loop()
        for pending in stopping:
            pending.terminating = reason
            if pending.queued and self._outbox is not None and not self._writer_closing():
                self._outbox.put(encode(Cancel(pending.seq, reason)))  # see _starts
            elif self.limit_grace <= 0 or self._outbox is None or self._writer_closing():
                self._overdue(pending)
            else:
                self._outbox.put(encode(Cancel(pending.seq, reason)))
                pending.backstop = loop.call_later(self.limit_grace, self._overdue, pending)
        return [p.future for p in stopping]

    def _overdue(self, pending: _Pending) -> None:
        if pending.future.done():
            return
        if self.limit_grace > 0:
            if self._terminated is None:
                self._terminated = pending
            log.warning("task %s[%s] did not stop within %.0fs of its terminate; killing "
                        "child %d", pending.job.task, pending.job.id, self.limit_grace, self.pid)
        self.kill()

    async def _read_forever(self, reader: asyncio.StreamReader) -> None:
        frames = FrameReader()
        try:
            # A chunk at a time: every reply the child has written is taken in one wake-up.
            while data := await reader.read(CHUNK):
                for frame in frames.feed(data):
                    if isinstance(frame, Done):
                        self._done(frame)
                    elif isinstance(frame, Progress):  # to the worker that holds the task
                        report(frame.task_id, frame.state, frame.meta)
                    elif isinstance(frame, Leaving):
                        self._leaving()
        except ConnectionError:
            pass  # EOF: the child exited, or was killed
        except Exception:  # a garbled frame: this child cannot be trusted any more
            log.exception("bad message from child %d; killing it", self.pid)
            self.kill()
        if self._watcher is not None:
            self._watcher.cancel()
        code = await self._reap()
        await self._close()
        self._settle(code)
        self.on_exit(self)

    async def _watch(self) -> None:
        """Watch the process: its memory while busy (with a limit), and its exit."""
        assert self._proc is not None
        exited = asyncio.ensure_future(self._proc.wait())
        try:
            interval = MEMORY_INTERVAL if self.memory_limit is not None else None
            while not exited.done():
                await asyncio.wait({exited}, timeout=interval)
                if not exited.done() and self.pending:
                    self._check_memory()
            # Reaped. Its socket reaches EOF now unless another process holds the other end
            # (a grandchild forked by a task, without our at-fork hook, e.g. from C); then the
            # parent would wait for that process. Take what is buffered and stop listening.
            if self._reader is not None:
                await asyncio.wait({self._reader}, timeout=EOF_GRACE)
                if not self._reader.done() and self._writer is not None:
                    log.warning("child %d exited but another process still holds its socket "
                                "(did a task fork?); closing it", self.pid)
                    self._writer.transport.abort()
        finally:
            exited.cancel()

    def _check_memory(self) -> None:
        assert self.memory_limit is not None
        rss = resident_mib_of(self.pid)
        if rss is None or rss <= self.memory_limit or self._over_memory is not None:
            return
        self._over_memory = (f"child exceeded --max-memory-per-child {self.memory_limit:g} MiB "
                             f"(RSS {rss:.0f} MiB)")
        tasks = ", ".join(f"{p.job.task}[{p.job.id}]" for p in self.pending.values())
        log.warning("%s while running %s; killing child %d", self._over_memory, tasks, self.pid)
        self.kill()

    def _done(self, done: Done) -> None:
        self.tasks_done += 1
        self.rss = done.rss
        self.last_duration = duration = done.outcome.duration
        self.typical += (duration - self.typical) * TYPICAL_WEIGHT
        pending = self.pending.pop(done.seq, None)
        if pending is not None:
            pending.disarm()
            if not pending.future.done():
                pending.future.set_result(done.outcome)
        if self.pending:
            head = next(iter(self.pending.values()))  # the oldest: what a serial child runs
            if head.queued:
                self._starts(head)
        self.on_done(self, done.outcome)

    def _leaving(self) -> None:
        """The child runs nothing more: what it has not answered never started, and is run
        elsewhere when it has exited (see ``_settle``)."""
        for pending in self.pending.values():
            pending.disarm()
            pending.queued = True

    def _settle(self, code: int | None) -> None:
        """Resolve every job the child was running when it went away."""
        pendings, self.pending = list(self.pending.values()), {}
        if not pendings:
            return
        loop = asyncio.get_running_loop()
        what = describe_exit(self.pid, code)
        hint = " (SIGKILL: killed from outside, e.g. by the out-of-memory killer)" if (
            code == -signal.SIGKILL and self._culprit is None and self._over_memory is None
            and self._terminated is None
        ) else ""
        culprit, terminated = self._culprit, self._terminated
        for pending in pendings:
            pending.disarm()
            if (pending.queued and pending.terminating is None and not self.stopping
                    and self.on_requeue is not None):
                self.on_requeue(pending.job, pending.future)  # it never started here
                continue
            duration = loop.time() - pending.started
            job = pending.job
            if pending.timed_out:
                assert job.timeout is not None
                outcome: Outcome = TimedOut(job.timeout, duration)
            elif pending.terminating is not None:
                outcome = Terminated(pending.terminating, duration)
            elif terminated is not None:
                outcome = Crashed(f"{what}: killed because task {terminated.job.task}"
                                  f"[{terminated.job.id}] in the same process was terminated "
                                  f"and did not stop within {self.limit_grace:g}s while this "
                                  "one ran", duration)
            elif culprit is not None:
                outcome = Crashed(f"{what}: killed because task {culprit.job.task}"
                                  f"[{culprit.job.id}] in the same process ran past its hard "
                                  f"time limit while this one ran", duration)
            elif self._over_memory is not None:
                outcome = Crashed(f"{self._over_memory}: {what} while running task {job.task}",
                                  duration)
            elif self.stopping:
                outcome = Crashed(f"{what}: the pool stopped while task {job.task} ran",
                                  duration)
            else:
                outcome = Crashed(f"{what} while running task {job.task}{hint}", duration)
                log.error("%s while running task %s[%s]%s", what, job.task, job.id, hint)
            if not pending.future.done():
                pending.future.set_result(outcome)

    async def _reap(self) -> int | None:
        """Wait for the process to exit (killing it after ``REAP_TIMEOUT``); its exit code."""
        if self._proc is None:
            return None
        try:
            return await asyncio.wait_for(self._proc.wait(), REAP_TIMEOUT)
        except TimeoutError:  # it closed its socket but lives on: it cannot serve any more
            self.kill()
            await self._proc.wait()
            return None

    async def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()

