"""The threads that run sync jobs: :class:`SyncThreads`, for the threads pool (and solo) and
for a hybrid child's sync jobs.

A sync task must not run on an event loop (it would stall every coroutine there), so it runs
in a thread. Going through an executor costs, for every job, a ``concurrent.futures.Future``
chained to an asyncio one, a wake-up of an idle thread and one of the loop, and an asyncio
task awaiting it all: for a short task, far more than the task, and every wake-up a hand-over
of the GIL between the loop and a thread. Here jobs go on one queue that the threads take
from, and what they finish comes back to the loop through a :class:`Mailbox`, which wakes the
loop once for everything finished by then.

Threads are woken as they are needed, not one per job: when jobs wait and no thread is awake,
one is woken (or started, up to ``limit``); an awake thread takes job after job, so short jobs
run in one thread without handing the GIL around. A job handed over while the jobs block
(the last one to end ran ``TICK`` or more) and more jobs wait than awake threads are free
wakes one more at once: a thread freed by a blocking job, gone idle, is woken for the next
without waiting for a look (10 ms naps on 8 threads would otherwise each wait a look or two).
Not when no thread has taken a job for ``TICK``: that is also a thread that merely waits for
the GIL while the loop hands out a batch, and short jobs would spread over every thread. While
jobs wait, the loop looks every ``TICK`` seconds:

- when the oldest waiting job has waited ``TICK`` or more, the awake threads are blocked in
  their tasks (I/O, a sleep) or too few for the work: as many again are woken, up to one per
  waiting job and ``limit`` in all. Jobs that block thus spread over 2, 4, 8... threads within
  a few looks, while short ones stay on one;
- a thread that finishes a job while others wait hands its outcome over without waking the
  loop, since it will soon finish more: the loop is woken when the queue has run dry, and
  takes what is waiting on each look meanwhile. So a batch of jobs is answered in a few
  writes, and an outcome waits at most ``TICK`` seconds when its thread goes on with a long
  job.

Time limits and terminating are kept as :func:`hubbub.worker.execute.in_thread` keeps them
(the same :class:`~hubbub.worker.stopping.InThread`): at the soft limit
``SoftTimeLimitExceeded`` is raised in the thread; at the hard limit ``TaskTimedOut`` is, and
the job is reported ``TimedOut`` at once; a terminate raises ``TerminateRequested`` and
reports ``Terminated`` at once. Limits count from when the job is handed over, as there.
A job that a limit or a terminate has reported and that is still running keeps its thread
until it returns; what it returns then is dropped.

The limit can change (``resize``, the threads pool's autoscale): more threads are started as
jobs need them, and threads over the limit exit when they find no job waiting.

A thread that forked and returns in the forked process ends that process there (the forked
copy has only that thread, and is no worker nor child: see :mod:`hubbub.worker.pools._child`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from hubbub.errors import SoftTimeLimitExceeded, TaskTimedOut
from hubbub.job import Job, Outcome, Terminated, TimedOut
from hubbub.task import Task
from hubbub.worker.execute import InThread, TerminateRequested, failure, limits, run_sync

TICK = 0.001  # seconds between the loop's looks at the queue while jobs wait (see above)


class Mailbox:
    """Items from any thread, handed to ``deliver`` on the loop in the order they were put.

    The loop is woken (``call_soon_threadsafe``) only when nothing put earlier is still
    waiting for it, so a burst of items costs one wake-up. Invariant, under the GIL: a
    thread appends, then looks at ``_woken``; the loop clears ``_woken``, then empties the
    queue; so an item is never left behind with no wake-up coming for it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[Any], None]) -> None:
        self.loop = loop
        self.deliver = deliver
        self._items: collections.deque[Any] = collections.deque()
        self._woken = False

    def put(self, item: Any, wake: bool = True) -> None:
        """Hand ``item`` to the loop (from any thread); dropped if the loop has closed.
        Without ``wake``, it waits for the next ``flush`` or ``wake``."""
        self._items.append(item)
        if wake:
            self.wake()

    def wake(self) -> None:
        """Have the loop take what is waiting (from any thread)."""
        if not self._woken:
            self._woken = True
            with contextlib.suppress(RuntimeError):  # the loop has closed: the child is over
                self.loop.call_soon_threadsafe(self._empty)

    def flush(self) -> None:
        """Deliver what is waiting now (on the loop)."""
        if self._items:
            self._empty()

    def _empty(self) -> None:
        self._woken = False
        items = self._items
        while items:
            self.deliver(items.popleft())


class _Entry:
    """One sync job, from the moment it is handed over until it is reported."""

    __slots__ = ("job", "outcome", "reported", "seq", "started", "task", "timers", "where")

    def __init__(self, seq: int, job: Job, task: Task[Any, Any]) -> None:
        self.seq = seq
        self.job = job
        self.task = task
        self.where = InThread()
        self.started = time.monotonic()
        self.reported = False  # set on the loop; the thread skips a job reported before it
        self.outcome: Outcome | None = None  # what the thread ended with
        self.timers: list[asyncio.TimerHandle] = []


class SyncThreads:
    """Runs sync jobs in up to ``limit`` threads; ``reply`` gets each outcome.

    Every method but the threads' own is called on the loop. ``post`` hands the loop other
    items in order with the outcomes (a hybrid child's progress reports, which must reach the
    parent before its ``Done``).

    Args:
        limit: threads at most (sync jobs running at once).
        reply: called on the loop with a job's number and outcome, once per job.
        other: called on the loop with each item given to ``post`` (None: nothing is posted).
        name: the threads' names are this, ``_`` and a number.
    """

    def __init__(self, limit: int, reply: Callable[[int, Outcome], None],
                 other: Callable[[Any], None] | None = None, *,
                 name: str = "hubbub-sync") -> None:
        self.limit = limit
        self.name = name
        self.reply = reply
        self.other = other
        self.loop = asyncio.get_running_loop()
        self.mailbox = Mailbox(self.loop, self._delivered)
        self.open: dict[int, _Entry] = {}  # by the parent's job number, until reported
        self._queue: collections.deque[_Entry] = collections.deque()
        # Taken as the plain lock (a Condition's own ``with`` is Python code, twice a job).
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._threads = 0  # started and not exited
        self._numbers = itertools.count(1)  # for the threads' names
        self._idle = 0  # waiting for work and not yet woken
        self._busy = 0  # running a job, or back from one and not yet at the queue
        self._took = 0.0  # how long the last job to end ran, in its thread
        self._tick: asyncio.TimerHandle | None = None
        self._closing = False
        self._emptied: asyncio.Future[None] | None = None
        self._pid = os.getpid()

    def run(self, seq: int, job: Job, task: Task[Any, Any]) -> None:
        """Queue sync job ``seq``; its outcome goes to ``reply``."""
        entry = _Entry(seq, job, task)
        self.open[seq] = entry
        soft, hard = limits(job)
        if soft is not None:
            entry.timers.append(self.loop.call_later(soft, entry.where.interrupt,
                                                     SoftTimeLimitExceeded))
        if hard is not None:
            entry.timers.append(self.loop.call_later(hard, self._timed_out, entry, hard))
        with self._lock:
            self._queue.append(entry)
            if self._idle == self._threads:  # none awake to take it
                self._wake(1)
            elif (len(self._queue) > self._threads - self._idle - self._busy
                  and self._took >= TICK):
                self._wake(1)  # more wait than free threads take, and the busy ones block
        if self._tick is None:
            self._tick = self.loop.call_later(TICK, self._look)

    def resize(self, limit: int) -> None:
        """Run up to ``limit`` jobs at once from now on: more threads start as jobs wait; idle
        threads over it exit now, busy ones once they find no job waiting."""
        self.limit = limit
        with self._lock:
            self._wake(min(self._idle, max(0, self._threads - limit)))

    def post(self, item: Any) -> None:
        """Hand ``item`` to ``other`` on the loop, after the outcomes finished before now."""
        self.mailbox.put(item)

    def cancel(self, seq: int, reason: str) -> bool:
        """Terminate job ``seq``: ``TerminateRequested`` in its thread (or it never starts)
        and ``Terminated`` reported now; False if it has been reported already."""
        entry = self.open.get(seq)
        if entry is None:
            return False
        entry.where.interrupt(TerminateRequested)
        self._report(entry, Terminated(reason, time.monotonic() - entry.started))
        return True

    async def wait(self) -> None:
        """Until every job handed over has been reported."""
        if self.open:
            if self._emptied is None:
                self._emptied = self.loop.create_future()
            await asyncio.shield(self._emptied)

    def close(self) -> list[int]:
        """Let the threads exit once idle (they are daemons: one stuck in an abandoned task
        does not hold the process). Jobs still waiting for a thread never start and are not
        reported.

        Returns:
            The numbers of those jobs.
        """
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        with self._lock:
            self._closing = True
            # A waiting job that a terminate or its hard limit reported already is over:
            # not one of the dropped.
            dropped = [entry for entry in self._queue if not entry.reported]
            self._queue.clear()
            self._ready.notify_all()
        for entry in dropped:
            self._forget(entry)
        # What a thread handed over without a wake, while jobs waited, counted on a look
        # that will not come now (the queue is empty, the looks are off).
        self.mailbox.flush()
        return [entry.seq for entry in dropped]

    # -- on the loop ---------------------------------------------------------------------------

    def _wake(self, count: int) -> None:
        """Wake ``count`` idle threads, starting new ones when none is idle (``_lock`` held)."""
        for _ in range(count):
            if self._idle:
                self._idle -= 1
                self._ready.notify()
            elif self._threads < self.limit:
                self._threads += 1
                threading.Thread(target=self._serve, name=f"{self.name}_{next(self._numbers)}",
                                 daemon=True).start()
            else:
                return

    def _look(self) -> None:
        """While jobs wait: if the oldest has waited a ``TICK``, wake as many threads again
        as are awake (see the module's docstring); take the outcomes handed over meanwhile."""
        waiting = 0
        try:
            with self._lock:
                waiting = len(self._queue)
                if waiting and time.monotonic() - self._queue[0].started >= TICK:
                    self._wake(min(waiting, max(1, self._threads - self._idle)))
            self.mailbox.flush()
        finally:  # a failing delivery or thread start must not end the looks for good
            self._tick = self.loop.call_later(TICK, self._look) if waiting else None

    def _timed_out(self, entry: _Entry, hard: float) -> None:
        entry.where.interrupt(TaskTimedOut)
        self._report(entry, TimedOut(hard, time.monotonic() - entry.started))

    def _delivered(self, item: Any) -> None:
        if not isinstance(item, _Entry):
            assert self.other is not None, "posted with nowhere to deliver"
            self.other(item)
        elif not item.reported:
            assert item.outcome is not None
            self._report(item, item.outcome)

    def _report(self, entry: _Entry, outcome: Outcome) -> None:
        self._forget(entry)
        self.reply(entry.seq, outcome)

    def _forget(self, entry: _Entry) -> None:
        """``entry`` is over for the loop (reported, or dropped unstarted): its timers off,
        and ``wait`` done once nothing is open."""
        entry.reported = True
        for timer in entry.timers:
            timer.cancel()
        del self.open[entry.seq]
        if not self.open and self._emptied is not None:
            if not self._emptied.done():
                self._emptied.set_result(None)
            self._emptied = None

    # -- in the threads ------------------------------------------------------------------------

    def _serve(self) -> None:
        lock, ready, queue = self._lock, self._ready, self._queue
        ran = False
        while True:
            with lock:
                if ran:
                    self._busy -= 1
                while not queue:
                    if self._closing or self._threads > self.limit:
                        self._threads -= 1
                        return
                    self._idle += 1  # taken back by whoever wakes this thread
                    ready.wait()
                entry = queue.popleft()
                self._busy += 1
                taken = time.monotonic()
            self._run(entry, taken)
            ran = True

    def _run(self, entry: _Entry, taken: float) -> None:
        where = entry.where
        where.thread = threading.get_ident()
        try:
            if entry.reported:  # terminated, or timed out, while it waited
                return
            entry.outcome = run_sync(entry.task, entry.job, where)
        except BaseException as exc:  # an interrupt that landed after the task's own code
            entry.outcome = failure(entry.task, exc, time.monotonic() - entry.started)
        finally:
            where.finish()
        if os.getpid() != self._pid:
            os._exit(0)  # a forked copy of the child, which has only this thread
        self._took = time.monotonic() - taken  # before the loop can hand over the next job
        # While jobs wait, the loop looks every TICK and takes this then (see above). The
        # queue is read after the put: a look that finds it empty comes after the put too.
        self.mailbox.put(entry, wake=False)
        if not self._queue:
            self.mailbox.wake()
