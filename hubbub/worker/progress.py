"""``Progress``: carries ``current_task().update_state(...)`` of running tasks to the worker.

The worker registers one sink per running task id (see :mod:`hubbub.context`); updates come
from the task's thread, the worker's loop, or a child's frame read on the loop. A burst of
updates costs one hop to the loop, which takes the latest, and the write buffer keeps one
record per id: a task that reports in a tight loop does not flood the result store.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hubbub.context import register_sink, unregister_sink

if TYPE_CHECKING:
    from hubbub.worker.held import Held

Update = tuple[str, "dict[str, Any] | None"]


class Progress:
    """Routes updates of the tasks running now to ``record(held, state, meta)``."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 record: Callable[[Held, str, dict[str, Any] | None], None]) -> None:
        self._loop = loop
        self._record = record
        self._running: dict[str, Held] = {}  # by task id
        self._latest: dict[str, Update] = {}  # not yet taken by the loop
        self._lock = threading.Lock()

    def started(self, held: Held) -> None:
        task_id = held.envelope.id
        self._running[task_id] = held
        register_sink(task_id, self._sink)

    def ended(self, held: Held) -> None:
        task_id = held.envelope.id
        unregister_sink(task_id)
        self._running.pop(task_id, None)

    def _sink(self, task_id: str, state: str, meta: dict[str, Any] | None) -> None:
        with self._lock:
            first = task_id not in self._latest
            self._latest[task_id] = (state, meta)
        if first:
            with contextlib.suppress(RuntimeError):  # the worker has stopped meanwhile
                self._loop.call_soon_threadsafe(self._take, task_id)

    def _take(self, task_id: str) -> None:
        with self._lock:
            update = self._latest.pop(task_id, None)
        held = self._running.get(task_id)
        if update is not None and held is not None:  # not once the task has ended
            self._record(held, *update)
