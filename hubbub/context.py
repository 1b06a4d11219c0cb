"""What a running task can know about itself: ``hubbub.current_task()``."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from hubbub.errors import HubbubError


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
        return self.retries >= self.max_retries


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
