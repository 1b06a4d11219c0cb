"""Events: frozen facts about tasks and workers, delivered to subscribers in-process.

A failing subscriber is logged and ignored; it never breaks the worker.
"""

from __future__ import annotations

import contextlib
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


# -- the rest of a task's life (issue 14: events on the wire) ---------------------------------


@dataclass(frozen=True, slots=True)
class TaskSent:
    """A producer published a task (emitted only by a hub made with ``events=True``).

    ``sender`` is ``host:pid`` of the producer; ``eta`` the epoch second it is due, if delayed.
    """

    id: str
    task: str
    queue: str
    sender: str
    eta: float | None = None


@dataclass(frozen=True, slots=True)
class TaskReceived:
    """A worker took a delivery of the task and will run it when a slot is free."""

    id: str
    task: str
    queue: str
    worker: str


@dataclass(frozen=True, slots=True)
class TaskStarted:
    """A worker started running the task (``attempt`` counts deliveries, from 1)."""

    id: str
    task: str
    queue: str
    worker: str
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class TaskRevoked:
    """The task will not run (on): revoked, expired, or terminated while it ran."""

    id: str
    task: str
    worker: str
    reason: str


Event: TypeAlias = (
    TaskSucceeded | TaskAttemptFailed | TaskDeadLettered | WorkerOnline | WorkerHeartbeat
    | WorkerOffline | TaskSent | TaskReceived | TaskStarted | TaskRevoked
)
Subscriber: TypeAlias = Callable[[Event], object]


class EventBus:
    """Subscribers called synchronously, in order, for every event emitted."""

    def __init__(self) -> None:
        # A tuple, replaced on (un)subscribe: a subscriber may leave while an event is
        # being delivered without the others missing it.
        self._subscribers: tuple[Subscriber, ...] = ()

    def subscribe(self, subscriber: Subscriber) -> Subscriber:
        """Add a subscriber; usable as a decorator. Returns it unchanged."""
        self._subscribers = (*self._subscribers, subscriber)
        return subscriber

    @property
    def listening(self) -> bool:
        """Whether anyone subscribed: events that cost something to build are only built
        then (a worker nobody watches pays nothing for them)."""
        return bool(self._subscribers)

    def listening_besides(self, subscriber: Subscriber | None) -> bool:
        """Whether anyone but ``subscriber`` subscribed (the worker's event publisher
        records the per-task steps itself, without building events for them)."""
        subscribers = self._subscribers
        return len(subscribers) > 1 or (len(subscribers) == 1
                                        and subscribers[0] != subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Remove a subscriber added before (a missing one is no error)."""
        subscribers = list(self._subscribers)
        with contextlib.suppress(ValueError):
            subscribers.remove(subscriber)
        self._subscribers = tuple(subscribers)

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
