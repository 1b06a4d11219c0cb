"""hubbub: a distributed task queue for Python that starts with zero servers."""

from __future__ import annotations

from hubbub._version import __version__
from hubbub.canvas import GroupResult, Signature, chain, chord, group
from hubbub.context import TaskContext, current_task
from hubbub.errors import (
    ConfigurationError,
    HubbubError,
    MessageError,
    MessageTooLarge,
    Reject,
    ResultError,
    ResultTimeout,
    ResultUnavailable,
    Retry,
    ScheduleError,
    SoftTimeLimitExceeded,
    TaskCrashed,
    TaskError,
    TaskFailed,
    TaskRevoked,
    TaskTimedOut,
    TransportError,
    TransportUnavailable,
    WriteBackFailed,
)
from hubbub.hub import Hub
from hubbub.logs import TaskFilter, get_task_logger
from hubbub.middleware import DispatchContext, Middleware
from hubbub.result import Result
from hubbub.results.base import State
from hubbub.settings import Limits
from hubbub.task import Task, TaskOptions
from hubbub.worker import WorkerLoop, run_worker

__all__ = [
    "ConfigurationError",
    "DispatchContext",
    "GroupResult",
    "Hub",
    "HubbubError",
    "Limits",
    "MessageError",
    "MessageTooLarge",
    "Middleware",
    "Reject",
    "Result",
    "ResultError",
    "ResultTimeout",
    "ResultUnavailable",
    "Retry",
    "ScheduleError",
    "Signature",
    "SoftTimeLimitExceeded",
    "State",
    "Task",
    "TaskContext",
    "TaskCrashed",
    "TaskError",
    "TaskFailed",
    "TaskFilter",
    "TaskOptions",
    "TaskRevoked",
    "TaskTimedOut",
    "TransportError",
    "TransportUnavailable",
    "WorkerLoop",
    "WriteBackFailed",
    "__version__",
    "chain",
    "chord",
    "current_task",
    "get_task_logger",
    "group",
    "run_worker",
]
