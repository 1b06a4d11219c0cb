"""What a running task can know about itself, ``hubbub.current_task()``, and what it can say:
``current_task().update_state(state, meta)``.

Progress travels from wherever the task runs to the worker that holds its delivery: in the
worker's own process through the sink the worker registers for that task id; in a child
process through the child's default sink, which sends it to the parent over the pool's
socket, where the parent hands it to the same registry.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hubbub._slots import slot_setters
from hubbub.codecs import json_dumps, pack
from hubbub.errors import HubbubError
from hubbub.results.base import State

ProgressSink = Callable[[str, str, "dict[str, Any] | None"], None]
"""Receives (task id, state name, meta) from ``update_state``; must not block."""

_sinks: dict[str, ProgressSink] = {}  # task id -> the worker that holds it, in this process
_default_sink: ProgressSink | None = None  # a child process: to its parent
_FINAL = {s.value for s in (State.SUCCESS, State.FAILURE, State.REVOKED, State.RETRY,
                            State.PENDING)}
MAX_STATE_NAME = 64


def register_sink(task_id: str, sink: ProgressSink) -> None:
    """Send ``update_state`` calls of task ``task_id`` to ``sink`` (the worker that runs it).

    No lock: a dict's item assignment and ``pop`` are atomic, and this is every task's path.
    """
    _sinks[task_id] = sink


def unregister_sink(task_id: str) -> None:
    _sinks.pop(task_id, None)


def set_default_sink(sink: ProgressSink | None) -> None:
    """Where updates go for task ids nobody registered (a child process: to its parent)."""
    global _default_sink
    _default_sink = sink


def report(task_id: str, state: str, meta: dict[str, Any] | None) -> bool:
    """Hand an update to whoever listens for ``task_id``; False when nobody does."""
    sink = _sinks.get(task_id) or _default_sink
    if sink is None:
        return False
    sink(task_id, state, meta)
    return True


@dataclass(frozen=True, slots=True)
class TaskContext:
    """The running task's identity and retry state.

    Ask for a retry by raising ``hubbub.Retry(countdown=...)``.
    """

    id: str
    task: str
    retries: int
    max_retries: int
    queue: str
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)

    @property
    def is_last_attempt(self) -> bool:
        """True when no retry is left after this attempt."""
        return self.retries >= self.max_retries

    def update_state(self, state: str = "PROGRESS", meta: Mapping[str, Any] | None = None
                     ) -> None:
        """Report how the task is doing: ``Result.state`` says ``state`` and ``Result.meta``
        says ``meta`` until the task ends. Cheap to call often: updates are coalesced, and
        only the latest reaches the result store.

        Args:
            state: a name of your own (``"PROGRESS"``, ``"DOWNLOADING"``, ...), or
                ``"STARTED"``; not a final state, which only the task's end may set.
            meta: anything the task's result could hold (JSON, plus the types of
                docs/types.md).

        Raises:
            ValueError: ``state`` is empty, too long, or a state only hubbub sets.
            TypeError: ``meta`` is not a mapping with string keys, or cannot be stored.
        """
        if not isinstance(state, str) or not state or len(state) > MAX_STATE_NAME:
            raise ValueError(f"update_state needs a state name of 1 to {MAX_STATE_NAME} "
                             f"characters, not {state!r}")
        if state in _FINAL:
            raise ValueError(f"state {state!r} is set by hubbub when the task ends; report "
                             "progress under a name of your own, e.g. 'PROGRESS'")
        data = None if meta is None else dict(meta)
        if data is not None:
            if not all(isinstance(k, str) for k in data):
                raise TypeError("update_state meta needs string keys")
            try:
                json_dumps(pack(data))
            except Exception as exc:
                raise TypeError(f"update_state meta cannot be stored: {exc}") from None
        report(self.id, state, data)


(_ID, _TASK, _RETRIES, _MAX_RETRIES, _QUEUE, _ROOT_ID, _PARENT_ID, _GROUP_ID,
 _HEADERS) = slot_setters(TaskContext)


def task_context(id: str, task: str, retries: int, max_retries: int, queue: str,
                 root_id: str | None, parent_id: str | None, group_id: str | None,
                 headers: dict[str, Any]) -> TaskContext:
    """``TaskContext(...)`` with every field given, slot by slot (:mod:`hubbub._slots`):
    every task builds one."""
    ctx: TaskContext = object.__new__(TaskContext)
    _ID(ctx, id)
    _TASK(ctx, task)
    _RETRIES(ctx, retries)
    _MAX_RETRIES(ctx, max_retries)
    _QUEUE(ctx, queue)
    _ROOT_ID(ctx, root_id)
    _PARENT_ID(ctx, parent_id)
    _GROUP_ID(ctx, group_id)
    _HEADERS(ctx, headers)
    return ctx


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "hubbub_current_task", default=None
)


def current_task() -> TaskContext:
    """The context of the task running in this thread or coroutine.

    Raises:
        HubbubError: called outside a task.
    """
    ctx = _current.get()
    if ctx is None:
        raise HubbubError("current_task() was called outside a running task")
    return ctx


def maybe_current_task() -> TaskContext | None:
    return _current.get()


def enter(ctx: TaskContext) -> contextvars.Token[TaskContext | None]:
    return _current.set(ctx)


def leave(token: contextvars.Token[TaskContext | None]) -> None:
    _current.reset(token)
