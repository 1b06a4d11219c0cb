"""Prefork: N child processes, one task at a time each. For CPU-bound and untrusted code.

A crash, a segfault, ``os._exit`` or an out-of-memory kill takes down one child, never the
worker: the parent sees the child's socket close, reports that task as ``Crashed`` with the
signal or exit code, and starts a new child. The hard ``timeout`` is exact: the parent kills
the child at the limit. ``soft_timeout`` raises ``SoftTimeLimitExceeded`` inside the task
(a SIGALRM handler in the child's main thread), so the task can clean up.
A terminate (``Pool.cancel``) kills the child at once, like the hard limit: the task is
reported ``Terminated`` and a new child starts.

How children start, and why
---------------------------

Each child is a fresh interpreter, ``python -c BOOT <fd>``, that imports the app by its import
path (``-A module:attr``) and talks to the parent over one socket (protocol:
:mod:`hubbub.worker.pools._wire`). In multiprocessing's terms this is ``spawn``. We chose it
over the alternatives deliberately:

- ``fork`` is the fastest (a child is ready in about a millisecond) but is unsafe here: the
  worker process already runs threads when the pool starts (the hub's bridge loop, SQLite's
  helper threads, executor threads), and a forked child inherits their locks in whatever
  state they were, which deadlocks rarely and unpredictably (the classic prefork hang; Python
  3.12 warns about it and 3.14 stopped defaulting to it).
- ``forkserver`` is safe and forks fast, but multiprocessing's implementation re-runs the
  parent's ``__main__`` (for the ``hubbub`` or ``pytest`` command scripts, an import of the
  whole CLI) in every child, is a process-wide singleton that keeps the modules of the first
  app it preloaded, and cannot give the gevent pool an interpreter where monkey-patching
  comes before every other import.
- ``spawn`` through ``subprocess`` starts a child in about 0.15 s (interpreter, hubbub and the
  app's imports), is identical wherever it runs, leaves no shared state behind, and gives
  every process pool (prefork, hybrid, gevent) one way to start children. That cost is paid
  when the worker starts (children start in parallel) and when a child is replaced after a
  crash or by recycling, not per task.

The price shows with ``max_tasks_per_child=1``: each task then also pays a child start.

Recycling: ``max_tasks_per_child`` and ``max_memory_per_child`` (resident MiB, read by the child
after each task) replace a child between tasks; a child whose task raised ``MemoryError`` is
replaced too. ``max_memory_per_child`` also holds while a task runs: the parent reads a busy
child's RSS every 0.5 s and kills a child over it (the task crashes with that reason).
Children ignore SIGINT, so Ctrl-C goes through the worker's graceful stop.

Lazy children: the pool starts at most one child per CPU with the worker; the rest of ``-c``
start one at a time, each when a job finds every child busy (and without window room). So
``-c 8`` on a two-core machine costs two interpreters until the work needs more: short
tasks are served by the window of the first ones, and long ones start the others (each
start takes about 0.15 s, paid once). A resize (autoscale, ``pool-grow``) starts its
children at once.

The window: while a child's tasks are short (under ``WINDOW_SHORT``, 10 ms), the parent queues
more jobs in it behind the one it runs (``Pool.window``), so the child goes from one short
task to the next without waiting for the worker loop to hand it the next one; that round
trip, not the task, was what bounded a drain of short tasks. How many: about ``WINDOW_SHORT``
of work at the length of the child's tasks (``Child.window_size``), at least 1 and at most
``window`` (64): no-op tasks fill it, and the worker fetches and hands them out in batches
of a hundred or more (``bench/drain.py``: a window of 8 drained 15,000 no-ops a second on
Redis, one of 64 about 21,000, with 40% less CPU per task in the parent); 1 ms tasks queue
ten, 5 ms ones two. So a job waits in a window behind at most about 10 ms of tasks that
looked short when it was queued. A queued job counts as started for the worker (its STARTED
state, its revoke check), its hard limit counts from when it really starts, a terminate skips
it in the child, and if the child dies, only the job it was running gets ``on_crash``: the
queued ones never started and run on another child. ``window=0`` turns it off.
"""

from __future__ import annotations

import os
from typing import ClassVar

from hubbub.worker.pools._child import BOOT
from hubbub.worker.pools._children import ChildPool, Children

WINDOW = 64  # most jobs queued per child while its tasks are short (Child.window_size)


class PreforkPool(ChildPool):
    """``concurrency`` child processes, each running one task at a time.

    Args:
        concurrency: number of child processes (default: the CPU count).
        import_path: "module:attr" the children import the app from; default: the hub's
            ``import_path`` (set when the CLI loaded the app with ``-A``).
        max_tasks_per_child: replace a child after this many tasks (default: never).
        max_memory_per_child: kill a busy child whose resident memory passes this many MiB
            (its tasks crash), and replace one that is above it after a task (default: never).
        window: most jobs queued in a child behind the one it runs while its tasks are
            short: about 10 ms of them, at most this many (default ``WINDOW``; 0: one job
            per child at a time).

    Raises:
        ValueError: a count or limit below 1, or a negative window.
    """

    kind: ClassVar[str] = "prefork"
    summary: ClassVar[str] = ("child processes, one task each; CPU-bound, leaky or "
                              "crash-prone code")
    resizable: ClassVar[bool] = True
    hard_timeouts_exact: ClassVar[bool] = True

    def __init__(self, concurrency: int | None = None, *, import_path: str | None = None,
                 max_tasks_per_child: int | None = None,
                 max_memory_per_child: float | None = None, window: int = WINDOW) -> None:
        if window < 0:
            raise ValueError(f"window must be 0 or more, got {window}")
        processes = concurrency if concurrency is not None else os.cpu_count() or 1
        super().__init__(Children(kind=self.kind, processes=processes, slots=1, mode="serial",
                                  boot=BOOT, import_path=import_path,
                                  max_tasks_per_child=max_tasks_per_child,
                                  max_memory_per_child=max_memory_per_child, window=window,
                                  initial=os.cpu_count() or 1))

    async def resize(self, concurrency: int) -> None:
        """Start or stop children to run ``concurrency`` tasks at once (autoscale)."""
        await super().resize(concurrency)
        await self.children.resize(concurrency)
