"""Gevent: greenlets with monkey-patching, for legacy blocking I/O code at high concurrency.

Monkey-patching replaces ``socket``, ``time.sleep``, ``threading`` and friends process-wide,
and must happen before they are imported. The worker's own process cannot do that: its
asyncio loop (the only place that talks to the broker), the bridge thread and SQLite's
threads need the real ones. So this pool runs in child process(es) fed by the worker over
the process pools' protocol (:mod:`hubbub.worker.pools._wire`), and each child's very first
statement is ``monkey.patch_all()``, before hubbub or the app is imported (``GEVENT_BOOT``).
Each child runs up to ``concurrency`` tasks as greenlets.

Sync tasks are what this pool is for: ``time.sleep``, ``requests``, database drivers written
in Python all yield to the other greenlets while they wait. ``async def`` tasks run too, each
on an event loop in a real OS thread of the child (an asyncio loop cannot share a thread with
the gevent hub), with the async pool's time-limit semantics. Time limits of sync tasks are
``gevent.Timeout``\\ s: they land at the task's next yield; a greenlet that never yields is
stopped by the parent killing its child shortly after the hard limit, which crashes that
child's other tasks too (``hard_timeouts_exact`` is False).
A terminate (``Pool.cancel``) is a ``Cancel`` frame: the child throws ``TerminateRequested``
into the task's greenlet (or cancels an ``async def`` task's coroutine), with the same kill
backstop.

Needs the extra: ``pip install hubbub[gevent]``.
"""

from __future__ import annotations

import importlib.util
from typing import ClassVar

from hubbub.errors import ConfigurationError
from hubbub.worker.pools._children import KILL_GRACE, ChildPool, Children

GEVENT_BOOT = ("from gevent import monkey; monkey.patch_all(); "
               "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
               "from hubbub.worker.pools._child import main; main()")


class GeventPool(ChildPool):
    """Greenlets in ``processes`` monkey-patched child processes.

    ``concurrency`` (what the worker loop uses for slots) is ``greenlets * processes``.

    Args:
        greenlets: tasks one child runs at once (``-c``; default 100).
        processes: monkey-patched child processes (default 1).
        import_path: "module:attr" the children import the app from; default: the hub's
            ``import_path`` (set when the CLI loaded the app with ``-A``).
        max_tasks_per_child: replace a child after this many tasks (default: never).
        max_memory_per_child: kill a busy child whose resident memory passes this many MiB
            (its tasks crash), and replace one that is above it after a task (default: never).

    Raises:
        ConfigurationError: gevent is not installed.
        ValueError: a count or limit below 1.
    """

    kind: ClassVar[str] = "gevent"
    summary: ClassVar[str] = ("greenlets in a monkey-patched child; legacy blocking I/O at "
                              "high concurrency; needs hubbub[gevent]")

    def __init__(self, greenlets: int = 100, *, processes: int = 1,
                 import_path: str | None = None, max_tasks_per_child: int | None = None,
                 max_memory_per_child: float | None = None) -> None:
        if importlib.util.find_spec("gevent") is None:
            raise ConfigurationError("the gevent pool needs an extra: pip install hubbub[gevent]")
        if greenlets < 1 or processes < 1:
            raise ValueError(f"gevent needs at least 1 greenlet and 1 process, got "
                             f"{greenlets} x {processes}")
        super().__init__(Children(kind=self.kind, processes=processes, slots=greenlets,
                                  mode="gevent", boot=GEVENT_BOOT, import_path=import_path,
                                  max_tasks_per_child=max_tasks_per_child,
                                  max_memory_per_child=max_memory_per_child,
                                  limit_grace=KILL_GRACE))
        self.greenlets = greenlets
        self.processes = processes
