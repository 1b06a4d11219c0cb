"""``Result``: a handle on a sent task, to ask for its state and value."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar, cast, overload

from hubbub.errors import (
    ErrorKind,
    ResultError,
    ResultTimeout,
    TaskCrashed,
    TaskError,
    TaskFailed,
    TaskRevoked,
    TaskTimedOut,
)
from hubbub.results.base import READY_STATES, ErrorInfo, ResultRecord, State
from hubbub.task import declared_name

if TYPE_CHECKING:
    from hubbub._bridge import Bridge

R = TypeVar("R")


class ResultsClient(Protocol):
    """All a :class:`Result` needs from its hub: the result store's operations, as coroutines
    for the bridge loop, and that bridge. ``Hub`` is one (see its methods for what each
    raises); a test can pass anything with these members."""

    @property
    def bridge(self) -> Bridge: ...

    async def read_results(self, ids: Sequence[str]) -> dict[str, ResultRecord]:
        """The records that exist, by id."""
        ...

    async def wait_result(self, id: str, timeout: float | None) -> ResultRecord | None:
        """The record once ready, or None after ``timeout`` seconds."""
        ...

    async def revoke(self, ids: Sequence[str], *, terminate: bool = False) -> list[str]:
        """Revoke the tasks; the ids it took effect for."""
        ...

    async def forget_results(self, ids: Sequence[str]) -> None:
        """Delete the records."""
        ...


class Result(Generic[R]):
    """The state and eventual value of one task, read from the hub's result store.

    Args:
        hub: where results are read (a ``Hub``, or any :class:`ResultsClient`).
        id: the task id.
        task: the task's name, for messages.
        ignored: the task keeps no result, so waiting for one is refused.
        raises: exception classes the task declared (``@hub.task(raises=...)``): a failure
            recorded under one of their names is raised as a ``TaskFailed`` that is also an
            instance of that class.

    Attributes:
        id: the task id.
    """

    __slots__ = ("hub", "id", "ignored", "raises", "task")

    def __init__(self, hub: ResultsClient, id: str, task: str | None = None,
                 *, ignored: bool = False, raises: tuple[type[Exception], ...] = ()) -> None:
        self.hub = hub
        self.id = id
        self.task = task
        self.ignored = ignored
        self.raises = raises

    def __repr__(self) -> str:
        return f"<Result {self.task or ''}[{self.id}]>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def record(self) -> ResultRecord | None:
        """The stored record, or None when there is none (yet, or any more)."""
        return self.hub.bridge.run(self.hub.read_results([self.id])).get(self.id)

    @property
    def state(self) -> str:
        """PENDING (also: unknown), STARTED, RETRY, SUCCESS, FAILURE or REVOKED, or while
        the task runs, a state it reported with ``update_state`` (e.g. ``"PROGRESS"``).

        A ``State`` member except for a task's own state names (``State`` is a ``str``
        enum, so ``result.state == "PROGRESS"`` and ``result.state == State.SUCCESS`` both
        read naturally)."""
        record = self.record()
        if record is None:
            return State.PENDING
        if record.state == State.STARTED and record.status is not None:
            return record.status
        return record.state

    @property
    def meta(self) -> dict[str, Any] | None:
        """What the running task last said with ``update_state(meta=...)``; None otherwise."""
        record = self.record()
        return None if record is None or record.state != State.STARTED else record.meta

    @property
    def result(self) -> R | TaskError | None:
        """The value of a task that succeeded, the error (the exception ``get`` would raise)
        of one that failed or was revoked, None while it is not finished. Does not wait."""
        record = self.record()
        if record is None or record.state not in READY_STATES:
            return None
        if record.state == State.SUCCESS:
            return cast("R", record.value)
        return self._error(record)

    @property
    def traceback(self) -> str | None:
        """The remote traceback of a failed task, as text; None when there is none."""
        record = self.record()
        if record is None or record.error is None:
            return None
        return record.error.traceback or None

    def ready(self) -> bool:
        """True once the task succeeded, failed for good, or was revoked."""
        return self.state in READY_STATES

    def successful(self) -> bool:
        """True once the task succeeded."""
        return self.state == State.SUCCESS

    def failed(self) -> bool:
        """True once the task failed for good (FAILURE; a revoke is not a failure)."""
        return self.state == State.FAILURE

    @overload
    def get(self, timeout: float | None = None, *, propagate: Literal[True] = True) -> R: ...

    @overload
    def get(self, timeout: float | None = None, *,
            propagate: Literal[False]) -> R | TaskError: ...

    @overload
    def get(self, timeout: float | None = None, *, propagate: bool) -> R | TaskError: ...

    def get(self, timeout: float | None = None, *, propagate: bool = True) -> R | TaskError:
        """Wait for the task and return its value.

        Args:
            timeout: seconds to wait; None waits as long as it takes.
            propagate: False returns the error (the exception below) instead of raising it.

        Raises:
            TaskCrashed: the process running the task died (a ``TaskFailed``).
            TaskTimedOut: the task ran past its hard time limit (a ``TaskFailed``).
            TaskFailed: the task failed; carries the remote type, message and traceback. It
                is also an instance of the task's exception class when that is a builtin
                (``except ValueError`` works) or one the task declared in ``raises``.
            TaskRevoked: the task was revoked or expired.
            ResultTimeout: no result within ``timeout`` seconds (even with propagate=False).
            ResultError: this task keeps no result, or the hub has no result store.
        """
        return self._unwrap(self.hub.bridge.run(self._wait(timeout)), timeout, propagate)

    @overload
    async def wait(self, timeout: float | None = None, *,
                   propagate: Literal[True] = True) -> R: ...

    @overload
    async def wait(self, timeout: float | None = None, *,
                   propagate: Literal[False]) -> R | TaskError: ...

    @overload
    async def wait(self, timeout: float | None = None, *,
                   propagate: bool) -> R | TaskError: ...

    async def wait(self, timeout: float | None = None, *,
                   propagate: bool = True) -> R | TaskError:
        """``get`` for async code: awaits without blocking the caller's event loop.

        Takes the same arguments and raises the same exceptions as :meth:`get`.
        """
        record = await self.hub.bridge.run_async(self._wait(timeout))
        return self._unwrap(record, timeout, propagate)

    async def _wait(self, timeout: float | None) -> ResultRecord | None:
        if self.ignored:
            raise ResultError(f"task {self.task!r} ignores its result; nothing to wait for")
        return await self.hub.wait_result(self.id, timeout)

    def _unwrap(self, record: ResultRecord | None, timeout: float | None,
                propagate: bool) -> R | TaskError:
        if record is None:
            raise ResultTimeout(f"task {self.id} gave no result within {timeout}s")
        if record.state == State.SUCCESS:
            return cast("R", record.value)
        error = self._error(record)
        if propagate:
            raise error
        return error

    def _error(self, record: ResultRecord) -> TaskError:
        """The exception a finished, unsuccessful record stands for."""
        error = record.error
        if record.state == State.REVOKED:
            return TaskRevoked(error.message if error else f"task {self.id} was revoked")
        if error is None:
            return TaskFailed("TaskError", f"task {self.id} failed")
        if error.type == ErrorKind.CRASHED:
            return TaskCrashed(error.message, error.traceback)
        if error.type == ErrorKind.TIMED_OUT:
            return TaskTimedOut(error.message, error.traceback)
        return task_failed(error, self.raises)

    def revoke(self, *, terminate: bool = False) -> bool:
        """Keep the task from starting; with ``terminate``, also stop it if it runs.

        Returns:
            True if the revoke took effect; False when the task had already finished, or
            is running and ``terminate`` was not asked for (it then runs to the end).

        Raises:
            ResultError: the hub has no result store (revokes live there).
        """
        return bool(self.hub.bridge.run(self.hub.revoke([self.id], terminate=terminate)))

    def forget(self) -> None:
        """Delete the stored result."""
        self.hub.bridge.run(self.hub.forget_results([self.id]))

    def info(self) -> dict[str, Any]:
        """The stored record as a dict (for display), or ``{"state": "PENDING"}``."""
        record = self.record()
        if record is None:
            return {"id": self.id, "state": State.PENDING.value}
        return {k: getattr(record, k) for k in record.__dataclass_fields__}


# -- TaskFailed that is also the task's own exception class -----------------------------------
#
# ``except ValueError`` around ``get()`` should catch a task's ValueError. The class is found
# only among Python's builtin exceptions (looked up in ``builtins``, never imported from a
# name in a message) and among the classes the task declared with ``raises=``, which the
# worker records by their qualified name (``shop.OrderError``).

_COMBINED: dict[type[Exception], type[TaskFailed]] = {}
_COMBINED_LOCK = threading.Lock()


def task_failed(error: ErrorInfo, declared: Sequence[type[Exception]] = ()) -> TaskFailed:
    """The ``TaskFailed`` for a recorded task error; never raises.

    Args:
        error: the recorded error; its ``type`` is a builtin's name (``"ValueError"``), a
            declared class's qualified name (``"shop.OrderError"``) or anything else.
        declared: the task's ``raises`` classes.

    Returns:
        A ``TaskFailed`` that is also an instance of the matching builtin or declared class,
        or a plain ``TaskFailed`` when none matches.
    """
    original = _original_class(error.type, declared)
    if original is not None:
        try:
            return failure_class(original)(error.type, error.message, error.traceback)
        except Exception:  # noqa: S110 - an odd class must not hide the task's failure
            pass
    return TaskFailed(error.type, error.message, error.traceback)


def _original_class(name: str, declared: Sequence[type[Exception]]) -> type[Exception] | None:
    for cls in declared:
        if declared_name(cls) == name:
            return cls
    found = vars(builtins).get(name)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


def failure_class(original: type[Exception]) -> type[TaskFailed]:
    """``TaskFailed[original]``: a ``TaskFailed`` subclass that is also an ``original``
    (cached); plain ``TaskFailed`` when Python cannot combine them or build one."""
    cached = _COMBINED.get(original)
    if cached is not None:
        return cached
    with _COMBINED_LOCK:
        cached = _COMBINED.get(original)
        if cached is None:
            cached = _COMBINED[original] = _combine(original)
    return cached


def _init(self: TaskFailed, type: str, message: str, traceback: str = "") -> None:
    # Not super().__init__: the original class's __init__ may want other arguments
    # (UnicodeDecodeError takes five); BaseException's takes anything.
    BaseException.__init__(self, f"{type}: {message}")
    self.type = type
    self.message = message
    self.traceback = traceback


def _str(self: TaskFailed) -> str:
    return f"{self.type}: {self.message}"


def _combine(original: type[Exception]) -> type[TaskFailed]:
    try:
        combined = type(f"TaskFailed[{original.__name__}]", (TaskFailed, original), {
            "__init__": _init, "__str__": _str, "__module__": TaskFailed.__module__,
            "__slots__": (),
        })
        combined("Exception", "probe")  # some classes cannot be built this way (__new__)
    except Exception:  # a layout conflict, a __new__ that wants other arguments
        return TaskFailed
    return cast("type[TaskFailed]", combined)
