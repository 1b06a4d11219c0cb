"""The parent side of the process pools: child processes, their jobs, deaths and recycling.

``Children`` is composed into ``PreforkPool``, ``HybridPool`` and ``GeventPool``; they differ
only in what a child runs (its ``mode`` and ``slots``) and in how hard time limits are kept.

How a child is started: ``python -c BOOT <fd>`` (``subprocess`` with the socket passed in
``pass_fds``), a fresh interpreter that imports the app by its import path. See
:mod:`hubbub.worker.pools.prefork` for why this start method and not fork or forkserver.

Invariants:

- a job sent to a child resolves exactly once: with the child's ``done`` reply, or when the
  child's socket reaches EOF (it died, or was killed at a hard limit), with ``TimedOut`` for
  the job whose limit killed it and ``Crashed`` (naming the signal or exit code) for the rest;
- a child leaves ``_active`` when it dies or is retired, and a replacement is started at
  once, so ``processes`` children serve at any time except while one is starting;
- a retiring child gets no new jobs and is told to stop once its last job is done;
- the parent stops listening to a child's socket once the process has been reaped (after
  ``EOF_GRACE``), even when something else still holds the other end (a process the task
  forked): a child's death is learnt from its exit, not only from EOF;
- with ``max_memory_per_child``, a busy child's resident memory is read every
  ``MEMORY_INTERVAL`` seconds and a child over the limit is killed mid-task.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hubbub.errors import ConfigurationError, ErrorKind
from hubbub.job import Crashed, Failed, Job, Outcome, TimedOut
from hubbub.results.base import ErrorInfo
from hubbub.worker.execute import exception_text
from hubbub.worker.pools._wire import (
    ChildSpec,
    Done,
    LoadFailed,
    Ready,
    Run,
    Stop,
    encode,
    read_frame,
    resident_mib_of,
)
from hubbub.worker.pools.base import Pool

if TYPE_CHECKING:
    from hubbub.hub import Hub

log = logging.getLogger("hubbub.worker")

START_TIMEOUT = 60.0  # seconds a child may take to import the app and say ready
STOP_GRACE = 5.0  # seconds stop() waits for a child to exit before killing it
REAP_TIMEOUT = 5.0  # seconds after EOF before a child that closed its socket is killed
RESTART_BACKOFF = (0.2, 5.0)  # delay bounds between failed attempts to start a child
KILL_GRACE = 1.0  # hybrid, gevent: seconds past a hard limit before the child is killed
EOF_GRACE = 0.5  # seconds after a child was reaped before its socket is given up on
MEMORY_INTERVAL = 0.5  # seconds between reads of a busy child's RSS (with a memory limit)


class StartFailed(Exception):
    """A child could not be started or could not load the app."""


@dataclass(eq=False)
class _Pending:
    """A job sent to a child and not yet answered."""

    seq: int
    job: Job
    future: asyncio.Future[Outcome]
    started: float
    timer: asyncio.TimerHandle | None = None
    timed_out: bool = False


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
            at the limit).
        on_done: called after each ``done`` reply.
        on_exit: called once, after the process was reaped and its jobs settled.
        memory_limit: resident MiB above which a busy child is killed (None: no watch).
    """

    def __init__(self, spec: ChildSpec, boot: str, limit_grace: float,
                 on_done: Callable[[Child, Outcome], None],
                 on_exit: Callable[[Child], None], memory_limit: float | None = None) -> None:
        self.spec = spec
        self.boot = boot
        self.limit_grace = limit_grace
        self.memory_limit = memory_limit
        self.on_done = on_done
        self.on_exit = on_exit
        self.pid = 0
        self.pending: dict[int, _Pending] = {}
        self.tasks_done = 0
        self.rss = 0.0
        self.retiring = False
        self.stopping = False
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._seq = itertools.count(1)
        self._culprit: _Pending | None = None
        self._over_memory: str | None = None  # why the memory watch killed it
        self._stop_sent = False

    @property
    def free(self) -> int:
        return self.spec.slots - len(self.pending)

    # -- life --------------------------------------------------------------------------------

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the process and wait until it has loaded the app.

        Raises:
            StartFailed: it exited, reported an error, or was not ready within ``timeout``.
        """
        parent_end, child_end = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", self.boot, str(child_end.fileno()),
                pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            parent_end.close()
            raise StartFailed(f"cannot start {sys.executable}: {exc}") from exc
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
            self.kill()
            await self._reap()
            await self._close()
            raise
        if not isinstance(first, Ready):
            await self._reap()
            await self._close()
            raise StartFailed(first.message if isinstance(first, LoadFailed)
                              else f"child {self.pid} sent {first!r:.100} instead of Ready")
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
        if not self._stop_sent and self._writer is not None and not self._writer.is_closing():
            self._stop_sent = True
            self._writer.write(encode(Stop()))

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
        assert self._writer is not None, "child not started"
        seq = next(self._seq)
        frame = encode(Run(seq, job))
        loop = asyncio.get_running_loop()
        pending = _Pending(seq, job, loop.create_future(), loop.time())
        if job.timeout is not None:
            pending.timer = loop.call_later(job.timeout + self.limit_grace, self._limit_reached,
                                            pending)
        self.pending[seq] = pending
        self._writer.write(frame)
        return pending.future

    def _limit_reached(self, pending: _Pending) -> None:
        if pending.future.done():
            return
        pending.timed_out = True
        if self._culprit is None:
            self._culprit = pending
        log.warning("task %s[%s] ran past its hard time limit of %ss; killing child %d",
                    pending.job.task, pending.job.id, pending.job.timeout, self.pid)
        self.kill()

    async def _read_forever(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                frame = await read_frame(reader)
                if isinstance(frame, Done):
                    self._done(frame)
        except (asyncio.IncompleteReadError, ConnectionError):
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
        pending = self.pending.pop(done.seq, None)
        if pending is not None:
            if pending.timer is not None:
                pending.timer.cancel()
            if not pending.future.done():
                pending.future.set_result(done.outcome)
        self.on_done(self, done.outcome)

    def _settle(self, code: int | None) -> None:
        """Resolve every job the child was running when it went away."""
        pendings, self.pending = list(self.pending.values()), {}
        if not pendings:
            return
        loop = asyncio.get_running_loop()
        what = describe_exit(self.pid, code)
        hint = " (SIGKILL: killed from outside, e.g. by the out-of-memory killer)" if (
            code == -signal.SIGKILL and self._culprit is None and self._over_memory is None
        ) else ""
        culprit = self._culprit
        for pending in pendings:
            if pending.timer is not None:
                pending.timer.cancel()
            duration = loop.time() - pending.started
            job = pending.job
            if pending.timed_out:
                assert job.timeout is not None
                outcome: Outcome = TimedOut(job.timeout, duration)
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


class Children:
    """``processes`` children serving one pool: dispatch, limits, replacement, recycling.

    Args:
        kind: the pool's name, for messages.
        processes: how many children serve at once.
        slots: jobs one child runs at once.
        mode: what a child runs: "serial", "asyncio" or "gevent".
        boot: the ``python -c`` program that starts a child.
        import_path: "module:attr" of the app; default: the hub's ``import_path``.
        max_tasks_per_child: replace a child after this many tasks (None: never).
        max_memory_per_child: kill a busy child whose resident memory passes this many MiB
            (its tasks crash), and replace one that is above it after a task (None: never).
        limit_grace: seconds past a hard limit before a child is killed.
        block_warning: passed to the children's event loops (hybrid).

    Raises:
        ValueError: a limit below 1.
    """

    def __init__(self, *, kind: str, processes: int, slots: int, mode: str, boot: str,
                 import_path: str | None = None, max_tasks_per_child: int | None = None,
                 max_memory_per_child: float | None = None, limit_grace: float = 0.0,
                 block_warning: float | None = None) -> None:
        if max_tasks_per_child is not None and max_tasks_per_child < 1:
            raise ValueError(f"max_tasks_per_child must be at least 1, got {max_tasks_per_child}")
        if max_memory_per_child is not None and max_memory_per_child <= 0:
            raise ValueError(f"max_memory_per_child must be positive, got {max_memory_per_child}")
        self.kind = kind
        self.processes = processes
        self.slots = slots
        self.mode = mode
        self.boot = boot
        self.import_path = import_path
        self.max_tasks_per_child = max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child
        self.limit_grace = limit_grace
        self.block_warning = block_warning
        self.started = 0  # children started so far, replacements included
        self._spec: ChildSpec | None = None
        self._active: list[Child] = []  # serving: new jobs go to these
        self._all: set[Child] = set()  # alive, retiring ones included
        self._background: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        """Process ids of the children serving now."""
        return [child.pid for child in self._active]

    async def start(self, import_path: str | None) -> None:
        """Start every child and wait until all have loaded the app.

        Raises:
            ConfigurationError: no import path, or a child could not load the app.
        """
        path = self.import_path or import_path
        if not path:
            raise ConfigurationError(
                f"the {self.kind} pool starts child processes that import the app: run the "
                "worker with -A module:attr, or pass import_path='module:attr' to the pool")
        root = logging.getLogger()
        self._spec = ChildSpec(path, self.mode, self.slots, tuple(sys.path),
                               root.getEffectiveLevel() if root.handlers else None,
                               self.block_warning)
        self._wake = asyncio.Event()
        self._stopping = False
        results = await asyncio.gather(*(self._start_child() for _ in range(self.processes)),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            first = errors[0]
            if not isinstance(first, StartFailed):
                raise first
            raise ConfigurationError(f"{self.kind} child process could not load {path}: "
                                     f"{first}") from None
        self._active.extend(r for r in results if isinstance(r, Child))

    async def run(self, job: Job) -> Outcome:
        """Run ``job`` on a child with a free slot (waiting for one if a child is starting)."""
        child = await self._pick()
        if child is None:
            return Crashed(f"the {self.kind} pool stopped before task {job.task} started", 0.0)
        try:
            future = child.submit(job)
        except Exception as exc:  # unpicklable arguments: the task's problem, not the pool's
            error = ErrorInfo(ErrorKind.MESSAGE, "cannot send the job to a child process: "
                              + exception_text(exc))
            return Failed(error, 0.0)
        return await future

    async def resize(self, processes: int) -> None:
        """Grow to or shrink to ``processes`` serving children (autoscale).

        Growing starts the missing children and waits for them; shrinking stops idle
        children (a busy one is left to finish and is stopped after its task).
        """
        self.processes = processes
        missing = processes - len(self._active)
        if missing > 0:
            started = await asyncio.gather(*(self._start_child() for _ in range(missing)),
                                           return_exceptions=True)
            for child in started:
                if isinstance(child, Child):
                    self._active.append(child)
                else:
                    log.error("could not start a %s child while growing: %s", self.kind, child)
            self._wake.set()
        for child in sorted(self._active, key=lambda c: len(c.pending))[processes:]:
            child.retiring = True  # no replacement: the pool is smaller now
            self._active.remove(child)
            if not child.pending:
                child.send_stop()

    async def stop(self) -> None:
        """Stop every child, in at most about ``STOP_GRACE`` seconds."""
        self._stopping = True
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*(child.stop() for child in list(self._all)))
        self._active.clear()
        self._wake.set()

    # -- internals ---------------------------------------------------------------------------

    async def _start_child(self) -> Child:
        assert self._spec is not None
        child = Child(self._spec, self.boot, self.limit_grace, self._on_done, self._on_exit,
                      self.max_memory_per_child)
        self.started += 1
        await child.start()
        self._all.add(child)
        return child

    def _room(self, child: Child) -> int:
        """Jobs ``child`` may still take: free slots, within its max_tasks_per_child."""
        if self.max_tasks_per_child is None:
            return child.free
        budget = self.max_tasks_per_child - child.tasks_done - len(child.pending)
        return min(child.free, budget)

    async def _pick(self) -> Child | None:
        while not self._stopping:
            roomy = [c for c in self._active if self._room(c) > 0]
            if roomy:
                return max(roomy, key=self._room)
            self._wake.clear()
            await self._wake.wait()
        return None

    def _on_done(self, child: Child, outcome: Outcome) -> None:
        self._wake.set()
        if not child.retiring and child in self._active:
            why = self._recycle_reason(child, outcome)
            if why is None:
                return
            log.info("replacing child %d: %s", child.pid, why)
            self._retire(child)
        if not child.pending:
            child.send_stop()

    def _recycle_reason(self, child: Child, outcome: Outcome) -> str | None:
        limit, memory = self.max_tasks_per_child, self.max_memory_per_child
        if limit is not None and child.tasks_done >= limit:
            return f"it ran {child.tasks_done} tasks (max_tasks_per_child={limit})"
        if memory is not None and child.rss > memory:
            return f"it uses {child.rss:.0f} MiB (max_memory_per_child={memory:g})"
        if isinstance(outcome, Failed) and outcome.error.type == "MemoryError":
            return "a task in it ran out of memory"
        if isinstance(outcome, Crashed):
            return "it is exiting: " + outcome.reason
        return None

    def _retire(self, child: Child) -> None:
        child.retiring = True
        if child in self._active:
            self._active.remove(child)
        if not self._stopping:
            replacing = asyncio.create_task(self._replace())
            self._background.add(replacing)
            replacing.add_done_callback(self._background.discard)

    def _on_exit(self, child: Child) -> None:
        self._all.discard(child)
        if not child.retiring and not child.stopping and not self._stopping:
            self._retire(child)
        self._wake.set()

    async def _replace(self) -> None:
        delay = RESTART_BACKOFF[0]
        while not self._stopping:
            try:
                child = await self._start_child()
            except StartFailed as exc:
                log.error("could not start a %s child (%s); trying again in %.1fs", self.kind,
                          exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_BACKOFF[1])
                continue
            self._active.append(child)
            self._wake.set()
            return


class ChildPool(Pool):
    """A pool whose slots live in child processes (prefork, hybrid, gevent): the pool
    seam, delegated to its ``children``."""

    children: Children

    async def start(self, hub: Hub) -> None:
        """Start the children and wait until each has imported the app.

        Raises:
            ConfigurationError: no import path is known, or a child could not import the app.
        """
        await self.children.start(hub.import_path)

    async def run(self, job: Job) -> Outcome:
        return await self.children.run(job)

    async def stop(self) -> None:
        await self.children.stop()
