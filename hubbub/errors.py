"""The exception hierarchy. Everything hubbub raises is a ``HubbubError``.

::

    HubbubError
    ├── ConfigurationError          bad URL, unknown option, missing extra
    ├── MessageError                a body that cannot be encoded, decoded or trusted
    │   └── MessageTooLarge
    ├── TransportError              the broker
    │   ├── TransportUnavailable    cannot reach it (also ConnectionError)
    │   └── MessageRejectedByBroker one item the broker can never take; the rest may go
    ├── TaskError                   what happened to a task
    │   ├── TaskFailed              raised by Result.get(); carries the remote type and traceback
    │   │   ├── TaskCrashed         the process running it died
    │   │   └── TaskTimedOut        hard limit (also TimeoutError)
    │   ├── TaskRevoked
    │   └── SoftTimeLimitExceeded   raised inside the task at its soft limit
    ├── ResultError                 the result store
    │   ├── ResultUnavailable       cannot reach it (also ConnectionError)
    │   └── ResultTimeout           Result.get(timeout=...) ran out (also TimeoutError)
    ├── ScheduleError
    └── WriteBackFailed             a worker could no longer write results and acks; it stopped

``Retry`` and ``Reject`` steer the worker from inside a task; they are not failures.
"""

from __future__ import annotations

import enum
from datetime import timedelta


class ErrorKind(enum.StrEnum):
    """The ``type`` of an error that hubbub itself reports (rather than one a task raised)."""

    CRASHED = "TaskCrashed"  # the process running the task died
    TIMED_OUT = "TaskTimedOut"  # the task ran past its hard limit
    REVOKED = "TaskRevoked"  # revoked or expired before it ran
    TERMINATED = "TaskTerminated"  # revoked with terminate=True: stopped if it was running
    REJECTED = "Rejected"  # the task raised Reject
    MESSAGE = "MessageError"  # the message could not be admitted (dead-lettered)
    RETRY = "Retry"  # the last attempt asked for a retry
    NOT_STORABLE = "ResultNotStorable"  # the outcome could not be written to the store
    NOT_ENCODABLE = "ResultNotEncodable"  # the return value cannot be stored as JSON


class HubbubError(Exception):
    """Root of every error hubbub raises."""


class ConfigurationError(HubbubError):
    """A setting, URL or option is wrong; the message names the fix."""


class MessageError(HubbubError):
    """A message cannot be encoded, decoded, validated or trusted."""


class MessageTooLarge(MessageError):
    """An encoded message is larger than the configured limit."""


class TransportError(HubbubError):
    """The broker failed an operation."""


class TransportUnavailable(TransportError, ConnectionError):
    """The broker cannot be reached."""


class MessageRejectedByBroker(TransportError):
    """One item of a batch can never be stored by this broker (too big, a queue name it
    cannot hold); retrying it will not help, but the other items may be sent again.

    Attributes:
        id: the message id of the rejected item.
        queue: its queue.
        reason: why, in one line.
    """

    def __init__(self, id: str, queue: str, reason: str) -> None:
        super().__init__(f"message {id!r} for queue {queue!r} rejected: {reason}")
        self.id = id
        self.queue = queue
        self.reason = reason


class TaskError(HubbubError):
    """Something happened to a task."""


class TaskFailed(TaskError):
    """The task raised; ``Result.get()`` re-raises it on the caller's side.

    Attributes:
        type: the name of the exception raised in the task, e.g. ``"ValueError"``.
        message: its message.
        traceback: the remote traceback as text.
    """

    def __init__(self, type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.traceback = traceback


class TaskRevoked(TaskError):
    """The task was revoked or expired before it ran."""


class TaskCrashed(TaskFailed):
    """The process running the task died (segfault, kill, out of memory)."""

    def __init__(self, message: str = "the process running the task died",
                 traceback: str = "") -> None:
        super().__init__(ErrorKind.CRASHED, message, traceback)


class TaskTimedOut(TaskFailed, TimeoutError):
    """The task ran past its hard time limit."""

    # Raised into a task's thread as a class (no arguments) at its hard limit.
    def __init__(self, message: str = "ran past its hard time limit",
                 traceback: str = "") -> None:
        super().__init__(ErrorKind.TIMED_OUT, message, traceback)


class SoftTimeLimitExceeded(TaskError):
    """Raised inside a task when it reaches its soft time limit; it may clean up."""


class ResultError(HubbubError):
    """The result store failed, or a result was asked for where none is kept."""


class ResultUnavailable(ResultError, ConnectionError):
    """The result store cannot be reached; retrying later may help."""


class ResultTimeout(ResultError, TimeoutError):
    """No result arrived within the timeout."""


class ScheduleError(HubbubError):
    """A schedule is malformed or cannot run."""


class Retry(Exception):
    """Raise inside a task to run it again later.

    Args:
        countdown: seconds (or a timedelta) to wait before the next attempt;
            None uses the task's exponential backoff.
        reason: why, for logs and the result store.
    """

    def __init__(self, countdown: float | timedelta | None = None, reason: str = "") -> None:
        super().__init__(reason or "retry requested")
        if isinstance(countdown, timedelta):
            countdown = countdown.total_seconds()
        self.countdown = countdown
        self.reason = reason


class Reject(Exception):
    """Raise inside a task to refuse the message: it goes to dead letters with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WriteBackFailed(HubbubError):
    """A worker's write-back broke; the worker stopped at once so a supervisor restarts it
    (what it had not acked comes back to the queue)."""
