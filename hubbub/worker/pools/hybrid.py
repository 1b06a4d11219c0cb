"""Hybrid: N child processes, each running its own event loop with up to M tasks at once.

For I/O fan-out bigger than one core can drive: every core runs an ``AsyncPool`` of its own.
In each child, ``async def`` tasks run as coroutines on the child's loop and sync tasks in
that child's threads, with the async pool's time-limit semantics and blocked-loop warning.
Sync tasks take the threads as they need them (:mod:`~hubbub.worker.pools._sync_threads`):
short ones run one after another in one thread, and their outcomes go back to the loop, and
on to the parent, in batches; ones that block spread over up to 32 threads.

The parent sends each job to the child with the most free slots; a child runs several jobs at
once, so replies carry the parent's job number (:mod:`hubbub.worker.pools._wire`). Children
start the way prefork's do (see :mod:`hubbub.worker.pools.prefork`).

Crash isolation is per process: a child that dies takes the jobs it was running with it
(each reported ``Crashed``, naming the signal or exit code) and is replaced; the other
children never notice.

Hard time limits are kept inside the child first (the coroutine is cancelled, the thread
gets ``TaskTimedOut``), so one slow task does not cost its neighbours. Only when a job is
still unanswered ``KILL_GRACE`` seconds past its limit (a task that blocks the child's loop,
or ignores cancellation) does the parent kill that child, and its other jobs crash with a
reason naming the culprit. That is why ``hard_timeouts_exact`` is False here: use prefork
when a limit must be exact.

A terminate (``Pool.cancel``) goes the same way: the child is sent ``Cancel`` and stops the
task as the async pool does (cancel the coroutine, raise in the thread); a task still running
``KILL_GRACE`` seconds later gets its child killed.
"""

from __future__ import annotations

import os
from typing import ClassVar

from hubbub.worker.pools._child import BOOT
from hubbub.worker.pools._children import KILL_GRACE, ChildPool, Children
from hubbub.worker.pools.coroutines import BLOCK_WARNING


class HybridPool(ChildPool):
    """``processes`` children, each running up to ``coroutines`` tasks on its own loop.

    ``concurrency`` (what the worker loop uses for slots) is ``processes * coroutines``.

    Args:
        processes: number of child processes (``-c``; default: the CPU count).
        coroutines: tasks one child runs at once (default 100).
        import_path: "module:attr" the children import the app from; default: the hub's
            ``import_path`` (set when the CLI loaded the app with ``-A``).
        max_tasks_per_child: replace a child after this many tasks (default: never).
        max_memory_per_child: kill a busy child whose resident memory passes this many MiB
            (its tasks crash), and replace one that is above it after a task (default: never).
        block_warning: seconds a task may block a child's loop before a warning (None: off).

    Raises:
        ValueError: a count or limit below 1.
    """

    kind: ClassVar[str] = "hybrid"
    summary: ClassVar[str] = ("child processes each running --coroutines tasks on its own "
                              "loop; I/O fan-out over every core")

    def __init__(self, processes: int | None = None, *, coroutines: int = 100,
                 import_path: str | None = None, max_tasks_per_child: int | None = None,
                 max_memory_per_child: float | None = None,
                 block_warning: float | None = BLOCK_WARNING) -> None:
        processes = processes if processes is not None else os.cpu_count() or 1
        if processes < 1 or coroutines < 1:
            raise ValueError(f"hybrid needs at least 1 process and 1 coroutine, got "
                             f"{processes} x {coroutines}")
        super().__init__(Children(kind=self.kind, processes=processes, slots=coroutines,
                                  mode="asyncio", boot=BOOT, import_path=import_path,
                                  max_tasks_per_child=max_tasks_per_child,
                                  max_memory_per_child=max_memory_per_child,
                                  limit_grace=KILL_GRACE, block_warning=block_warning))
        self.processes = processes
        self.coroutines = coroutines
