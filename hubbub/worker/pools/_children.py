"""The parent side of the process pools: which children serve, their replacement and recycling.

``Children`` is composed into ``PreforkPool``, ``HybridPool`` and ``GeventPool``; they differ
only in what a child runs (its ``mode`` and ``slots``) and in how hard time limits are kept.
``ChildPool`` is the pool seam those three share, delegated to their ``children``. One child
process, its jobs and its death are :mod:`hubbub.worker.pools._child_handle`'s ``Child``.

Invariants:

- a child leaves ``_active`` when it dies or is retired, and a replacement is started at
  once, so ``processes`` children serve at any time except while one is starting, or
  before they were first needed: with ``initial``, only that many start with the pool and
  the rest one by one, each when a job finds every serving child without room;
- a retiring child gets no new jobs and is told to stop once its last job is done;
- a child is given no more jobs than its ``max_tasks_per_child`` leaves room for;
- with a ``window`` (prefork), a serial child is also given queued jobs behind the one it
  runs, about ``WINDOW_SHORT`` of work at the length of its tasks (``Child.window_size``),
  at most ``window``, but only while its tasks are short (``WINDOW_SHORT``): a child then
  never waits for the worker loop between short tasks, and a long task holds back no more
  than the few jobs queued before it showed to be long. Queued jobs of a child that dies are
  run on another child (``_requeue``); the pool's ``run`` for them waits on.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, ClassVar

from hubbub.errors import ConfigurationError, ErrorKind
from hubbub.job import Crashed, Failed, Job, Outcome, Terminated
from hubbub.logs import current_setup
from hubbub.results.base import ErrorInfo
from hubbub.worker.outcome_of import exception_text
from hubbub.worker.pools._child_handle import Child, StartFailed
from hubbub.worker.pools._wire import ChildSpec
from hubbub.worker.pools.base import Pool

if TYPE_CHECKING:
    from hubbub.hub import Hub

log = logging.getLogger("hubbub.worker")

RESTART_BACKOFF = (0.2, 5.0)  # delay bounds between failed attempts to start a child
KILL_GRACE = 1.0  # hybrid, gevent: seconds past a hard limit before the child is killed
WINDOW_SHORT = 0.01  # seconds: a child whose tasks take less is given queued jobs


def _loop_kind(loop: asyncio.AbstractEventLoop) -> str:
    """"uvloop" or "asyncio": the kind of ``loop``, which a worker's children run too."""
    return "uvloop" if type(loop).__module__.partition(".")[0] == "uvloop" else "asyncio"


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
        window: queued jobs a serial child may hold behind the one it runs (prefork).
        initial: children started with the pool (None: all ``processes``); the others start
            when work needs them.

    Raises:
        ValueError: a limit below 1.
    """

    def __init__(self, *, kind: str, processes: int, slots: int, mode: str, boot: str,
                 import_path: str | None = None, max_tasks_per_child: int | None = None,
                 max_memory_per_child: float | None = None, limit_grace: float = 0.0,
                 block_warning: float | None = None, window: int = 0,
                 initial: int | None = None) -> None:
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
        self.window = window if mode == "serial" else 0
        self.initial = initial
        self._starting = 0  # children being started in the background
        self.started = 0  # children started so far, replacements included
        self._spec: ChildSpec | None = None
        self._active: list[Child] = []  # serving: new jobs go to these
        self._all: set[Child] = set()  # alive, retiring ones included
        self._background: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._window_now: int | None = None  # window_room, for the rest of this loop turn
        self._window_turn = False  # a call at the end of this turn forgets _window_now

    @property
    def pids(self) -> list[int]:
        """Process ids of the children serving now."""
        return [child.pid for child in self._active]

    async def start(self, import_path: str | None,
                    urls: tuple[str, str | None] | None = None) -> None:
        """Start every child and wait until all have loaded the app.

        Args:
            import_path: the app, unless the pool was given one.
            urls: the worker's broker and result store; a child whose app module configures
                others (a test re-pointed the hub) uses these, so that what its tasks send
                goes where this worker consumes.

        Raises:
            ConfigurationError: no import path, or a child could not load the app.
        """
        path = self.import_path or import_path
        if not path:
            raise ConfigurationError(
                f"the {self.kind} pool starts child processes that import the app: run the "
                "worker with -A module:attr, or pass import_path='module:attr' to the pool")
        root = logging.getLogger()
        setup = current_setup()  # the worker's --log-format and --logfile, for its children
        self._spec = ChildSpec(path, self.mode, self.slots, tuple(sys.path),
                               root.getEffectiveLevel() if root.handlers else None,
                               self.block_warning, setup.format if setup else "text",
                               setup.file if setup else None,
                               urls[0] if urls else None,
                               (urls[1] or "none") if urls else None,
                               max_memory=self.max_memory_per_child,
                               loop=_loop_kind(asyncio.get_running_loop()))
        self._wake = asyncio.Event()
        self._stopping = False
        now = self.processes if self.initial is None else min(self.initial, self.processes)
        results = await asyncio.gather(*(self._start_child() for _ in range(max(1, now))),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            first = errors[0]
            if not isinstance(first, StartFailed):
                raise first
            raise ConfigurationError(f"{self.kind} child process could not load {path}: "
                                     f"{first}") from None  # also: an on_process_start hook
        self._active.extend(r for r in results if isinstance(r, Child))

    async def run(self, job: Job) -> Outcome:
        """Run ``job`` on a child with a free slot (waiting for one if a child is starting)."""
        child = await self._pick()
        if child is None:
            return Crashed(f"the {self.kind} pool stopped before task {job.task} started", 0.0)
        return await self._send(child, job)

    def submit(self, job: Job) -> asyncio.Future[Outcome] | None:
        """Send ``job`` to the child with the most room now, if one has room; see
        ``Pool.submit``. None: every child is full (or the pool is stopping)."""
        child = None if self._stopping else self._roomiest()
        return None if child is None else self._send(child, job)

    def _send(self, child: Child, job: Job) -> asyncio.Future[Outcome]:
        try:
            return child.submit(job)
        except Exception as exc:  # unpicklable arguments: the task's problem, not the pool's
            error = ErrorInfo(ErrorKind.MESSAGE, "cannot send the job to a child process: "
                              + exception_text(exc))
            failed: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            failed.set_result(Failed(error, 0.0))
            return failed

    async def cancel(self, job_id: str, reason: str) -> bool:
        """Stop the running job ``job_id`` (see ``Child.terminate``) and wait for its outcome,
        which comes within about ``limit_grace`` seconds (the kill backstop).

        Returns:
            True if it ended ``Terminated``; False if it was not running in a child, or
            ended on its own first.
        """
        futures = [f for child in list(self._all) for f in child.terminate(job_id, reason)]
        if not futures:
            return False
        # Shielded: a caller that stops waiting must not cancel the job's own outcome.
        outcomes = await asyncio.gather(*(asyncio.shield(f) for f in futures))
        return any(isinstance(outcome, Terminated) for outcome in outcomes)

    async def resize(self, processes: int) -> None:
        """Grow to or shrink to ``processes`` serving children (autoscale).

        Growing starts the missing children and waits for them; shrinking stops idle
        children (a busy one is left to finish and is stopped after its task).
        """
        self.processes = processes
        missing = processes - len(self._active) - self._starting
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
        self._window_now = None

    async def stop(self) -> None:
        """Stop every child, in at most about ``STOP_GRACE`` seconds (see ``Child.stop``)."""
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
                      self.max_memory_per_child, self._requeue)
        self.started += 1
        await child.start()
        self._all.add(child)
        return child

    def window_room(self) -> int:
        """Queued jobs the serving children may take now beyond their slots: each child's
        ``window_size`` while its tasks are short (see ``Child.windowable``), so the worker
        hands out no job that would wait behind a long task (past the revoke check at its
        start).

        Worked out once per turn of the event loop (the worker asks for it several times per
        task): a reply or a child's exit works it out again at once, and a child whose task
        became long in the meantime is seen next turn (``_pick`` looks at each child itself).
        """
        if not self.window:
            return 0
        room = self._window_now
        if room is None:
            loop = asyncio.get_running_loop()
            now = loop.time()
            room = self._window_now = sum(
                c.window_size(self.window, WINDOW_SHORT) for c in self._active
                if c.windowable(WINDOW_SHORT, now))
            if not self._window_turn:
                self._window_turn = True
                loop.call_soon(self._forget_window)
        return room

    def _forget_window(self) -> None:
        self._window_now, self._window_turn = None, False

    def _requeue(self, job: Job, future: asyncio.Future[Outcome]) -> None:
        """Run ``job``, queued on a child that died before starting it, on another child;
        ``future`` (what ``run`` awaits) gets its outcome there."""
        rerun = asyncio.create_task(self._rerun(job, future))
        self._background.add(rerun)
        rerun.add_done_callback(self._background.discard)

    async def _rerun(self, job: Job, future: asyncio.Future[Outcome]) -> None:
        try:
            child = await self._pick()
            if child is not None:
                outcome = await child.submit(job)
                if not future.done():
                    future.set_result(outcome)
        finally:  # the pool stopped (this task was cancelled, or no child is left)
            if not future.done():
                future.set_result(Crashed(f"the {self.kind} pool stopped before task "
                                          f"{job.task} started", 0.0))

    def _roomiest(self) -> Child | None:
        """The child with the most room (the first of equals); None if none has any."""
        best, most = None, 0
        now = asyncio.get_running_loop().time()
        window, limit = self.window, self.max_tasks_per_child
        for child in self._active:
            # Its free slots (and its window while its tasks are short), within its
            # max_tasks_per_child.
            room = child.room(window, WINDOW_SHORT, now)
            if limit is not None:
                room = min(room, limit - child.tasks_done - len(child.pending))
            if room > most:
                best, most = child, room
        return best

    async def _pick(self) -> Child | None:
        while not self._stopping:
            best = self._roomiest()
            if best is not None:
                return best
            if len(self._active) + self._starting < self.processes:
                self._start_in_background()  # one not needed until now (``initial``)
            self._wake.clear()
            await self._wake.wait()
        return None

    def _on_done(self, child: Child, outcome: Outcome) -> None:
        self._window_now = None  # its last task's length, or its next one, changed it
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
            self._start_in_background()

    def _start_in_background(self) -> None:
        """Start one more child (a replacement, or one first needed now); it serves once up."""
        self._starting += 1
        starting = asyncio.create_task(self._replace())
        self._background.add(starting)
        starting.add_done_callback(self._started_in_background)

    def _started_in_background(self, starting: asyncio.Task[None]) -> None:
        self._starting -= 1
        self._background.discard(starting)

    def _on_exit(self, child: Child) -> None:
        self._window_now = None
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
            if len(self._active) >= self.processes:  # the pool shrank meanwhile
                child.retiring = True
                child.send_stop()
                return
            self._active.append(child)
            self._window_now = None
            self._wake.set()
            return


class ChildPool(Pool):
    """A pool whose slots live in child processes (prefork, hybrid, gevent): the pool
    seam, delegated to its ``children``.

    Its ``concurrency`` is every slot of every child: ``children.processes * children.slots``.

    Args:
        children: the children that serve this pool, not started yet.

    Raises:
        ValueError: no slot at all.
    """

    in_process: ClassVar[bool] = False  # each child runs the process hooks itself

    def __init__(self, children: Children) -> None:
        super().__init__(children.processes * children.slots)
        self.children = children

    @property
    def window(self) -> int:
        """Queued jobs the children take now: see ``Children.window_room``."""
        return self.children.window_room()

    async def start(self, hub: Hub) -> None:
        """Start the children and wait until each has imported the app.

        Raises:
            ConfigurationError: no import path is known, or a child could not import the app.
        """
        await self.children.start(hub.import_path,
                                  (hub.settings.broker, hub.settings.results))

    async def run(self, job: Job) -> Outcome:
        return await self.children.run(job)

    def submit(self, job: Job) -> asyncio.Future[Outcome] | None:
        """Send ``job`` to a child with room now (see ``Children.submit``)."""
        return self.children.submit(job)

    async def cancel(self, job_id: str, reason: str) -> bool:
        """Stop the job in its child: prefork kills the child (and replaces it); hybrid and
        gevent ask the child to cancel the job and kill it if the job has not ended
        ``KILL_GRACE`` seconds later (its other jobs then crash)."""
        return await self.children.cancel(job_id, reason)

    async def stop(self) -> None:
        await self.children.stop()
