"""What a pool runs (``Job``) and what it reports back (``Outcome``): plain, picklable data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from hubbub._slots import slot_setters
from hubbub.results.base import ErrorInfo

if TYPE_CHECKING:
    from hubbub.message import Envelope


@dataclass(frozen=True, slots=True)
class Job:
    """One task invocation handed to a pool."""

    id: str
    task: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    queue: str = "default"
    retries: int = 0
    max_retries: int = 0
    timeout: float | None = None
    soft_timeout: float | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_envelope(cls, env: Envelope) -> Job:
        """The job that runs ``env``: the one place an envelope's fields reach a pool."""
        # Slot by slot (hubbub._slots): this runs for every task; a test pins every field
        # to the envelope's.
        job: Job = object.__new__(cls)
        _ID(job, env.id)
        _TASK(job, env.task)
        _ARGS(job, env.args)
        _KWARGS(job, env.kwargs)
        _QUEUE(job, env.queue)
        _RETRIES(job, env.retries)
        _MAX_RETRIES(job, env.max_retries)
        _TIMEOUT(job, env.timeout)
        _SOFT_TIMEOUT(job, env.soft_timeout)
        _ROOT_ID(job, env.root_id)
        _PARENT_ID(job, env.parent_id)
        _GROUP_ID(job, env.group_id)
        _HEADERS(job, env.headers)
        return job


(_ID, _TASK, _ARGS, _KWARGS, _QUEUE, _RETRIES, _MAX_RETRIES, _TIMEOUT, _SOFT_TIMEOUT, _ROOT_ID,
 _PARENT_ID, _GROUP_ID, _HEADERS) = slot_setters(Job)


@dataclass(frozen=True, slots=True, init=False)
class Succeeded:
    value: Any
    duration: float

    def __init__(self, value: Any, duration: float) -> None:
        # Slot by slot (hubbub._slots): every task that succeeds makes one.
        _VALUE(self, value)
        _DURATION(self, duration)


_VALUE, _DURATION = slot_setters(Succeeded)


@dataclass(frozen=True, slots=True)
class Failed:
    """The task raised. ``retry`` is the runner's verdict (``Retry`` raised, or the error is
    one of the task's ``retry_for``); ``countdown`` is what ``Retry`` asked for, if anything."""

    error: ErrorInfo
    duration: float
    retry: bool = False
    countdown: float | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """The task raised ``Reject``: dead-letter it with the reason."""

    reason: str
    duration: float


@dataclass(frozen=True, slots=True)
class Crashed:
    """The process running the task died (segfault, os._exit, OOM, SIGKILL)."""

    reason: str
    duration: float


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The task ran past its hard time limit and was stopped (or abandoned)."""

    limit: float
    duration: float


@dataclass(frozen=True, slots=True)
class Terminated:
    """The task was revoked with ``terminate=True`` while it ran, and its pool stopped it."""

    reason: str
    duration: float


Outcome: TypeAlias = Succeeded | Failed | Rejected | Crashed | TimedOut | Terminated
