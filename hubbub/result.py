"""``Result``: a handle on a sent task, to ask for its state and value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from hubbub.errors import (
    ErrorKind,
    ResultError,
    ResultTimeout,
    TaskCrashed,
    TaskFailed,
    TaskRevoked,
    TaskTimedOut,
)
from hubbub.results.base import READY_STATES, ResultRecord, State

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

    Attributes:
        id: the task id.
    """

    __slots__ = ("hub", "id", "ignored", "task")

    def __init__(self, hub: ResultsClient, id: str, task: str | None = None,
                 *, ignored: bool = False) -> None:
        self.hub = hub
        self.id = id
        self.task = task
        self.ignored = ignored

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
    def state(self) -> State:
        """PENDING (also: unknown), STARTED, RETRY, SUCCESS, FAILURE or REVOKED."""
        record = self.record()
        return State.PENDING if record is None else record.state

    def ready(self) -> bool:
        """True once the task succeeded, failed for good, or was revoked."""
        return self.state in READY_STATES

    def successful(self) -> bool:
        return self.state == State.SUCCESS

    def failed(self) -> bool:
        return self.state == State.FAILURE

    def get(self, timeout: float | None = None) -> R:
        """Wait for the task and return its value.

        Raises:
            TaskCrashed: the process running the task died (a ``TaskFailed``).
            TaskTimedOut: the task ran past its hard time limit (a ``TaskFailed``).
            TaskFailed: the task failed; carries the remote type, message and traceback.
            TaskRevoked: the task was revoked or expired.
            ResultTimeout: no result within ``timeout`` seconds.
            ResultError: this task keeps no result, or the hub has no result store.
        """
        return self._unwrap(self.hub.bridge.run(self._wait(timeout)), timeout)

    async def wait(self, timeout: float | None = None) -> R:
        """``get`` for async code: awaits without blocking the caller's event loop.

        Raises:
            The same as ``get``.
        """
        return self._unwrap(await self.hub.bridge.run_async(self._wait(timeout)), timeout)

    async def _wait(self, timeout: float | None) -> ResultRecord | None:
        if self.ignored:
            raise ResultError(f"task {self.task!r} ignores its result; nothing to wait for")
        return await self.hub.wait_result(self.id, timeout)

    def _unwrap(self, record: ResultRecord | None, timeout: float | None) -> R:
        if record is None:
            raise ResultTimeout(f"task {self.id} gave no result within {timeout}s")
        if record.state == State.SUCCESS:
            return cast("R", record.value)
        error = record.error
        if record.state == State.REVOKED:
            raise TaskRevoked(error.message if error else f"task {self.id} was revoked")
        if error is None:
            raise TaskFailed("TaskError", f"task {self.id} failed")
        if error.type == ErrorKind.CRASHED:
            raise TaskCrashed(error.message, error.traceback)
        if error.type == ErrorKind.TIMED_OUT:
            raise TaskTimedOut(error.message, error.traceback)
        raise TaskFailed(error.type, error.message, error.traceback)

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
