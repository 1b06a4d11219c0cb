"""Events: frozen facts about tasks and workers, delivered to subscribers in-process.

A failing subscriber is logged and ignored; it never breaks the worker.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

log = logging.getLogger("hubbub.events")


@dataclass(frozen=True, slots=True)
class TaskSucceeded:
    """A task ran and succeeded in ``duration`` seconds on ``worker``."""

    id: str
    task: str
    duration: float
    worker: str


@dataclass(frozen=True, slots=True)
class TaskAttemptFailed:
    """One attempt of a task failed; ``will_retry`` says whether another follows.

    (Named apart from the exception ``hubbub.TaskFailed``, which ``Result.get()`` raises
    when a task failed for good.)
    """

    id: str
    task: str
    duration: float
    worker: str
    error: str
    will_retry: bool


@dataclass(frozen=True, slots=True)
class TaskDeadLettered:
    """A message went to the dead letters of ``queue`` for ``reason`` (``id`` is None when
    the body could not be read)."""

    id: str | None
    queue: str
    reason: str
    worker: str


@dataclass(frozen=True, slots=True)
class LaneInfo:
    """One lane of a worker: its queues and the pool that runs them."""

    queues: tuple[str, ...]
    pool: str
    concurrency: int


@dataclass(frozen=True, slots=True)
class WorkerOnline:
    """A worker started. ``queues``/``pool``/``concurrency`` sum up its ``lanes``."""

    worker: str
    queues: tuple[str, ...]
    pool: str
    concurrency: int
    lanes: tuple[LaneInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat:
    """A worker is alive: ``running`` tasks now, ``processed`` since it started."""

    worker: str
    running: int
    processed: int


@dataclass(frozen=True, slots=True)
class WorkerOffline:
    """A worker stopped after ``processed`` tasks."""

    worker: str
    processed: int


Event: TypeAlias = (
    TaskSucceeded | TaskAttemptFailed | TaskDeadLettered | WorkerOnline | WorkerHeartbeat
    | WorkerOffline
)
Subscriber: TypeAlias = Callable[[Event], object]


class EventBus:
    """Subscribers called synchronously, in order, for every event emitted."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Subscriber:
        """Add a subscriber; usable as a decorator. Returns it unchanged."""
        self._subscribers.append(subscriber)
        return subscriber

    def emit(self, event: Event) -> None:
        """Call every subscriber with ``event``; one that raises is logged and skipped."""
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", subscriber, type(event).__name__)


if TYPE_CHECKING:
    TaskFailed = TaskAttemptFailed
else:
    def __getattr__(name: str) -> object:
        if name == "TaskFailed":
            warnings.warn("hubbub.events.TaskFailed is now TaskAttemptFailed (hubbub.TaskFailed "
                          "is the exception Result.get raises); the old name goes in 0.3",
                          DeprecationWarning, stacklevel=2)
            return TaskAttemptFailed
        raise AttributeError(f"module 'hubbub.events' has no attribute {name!r}")
