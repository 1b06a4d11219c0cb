"""``GroupResult``: the Results of a group's members, read together."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hubbub.errors import ResultError, ResultTimeout
from hubbub.result import Result, ResultsClient
from hubbub.results.base import READY_STATES, ResultRecord, State

if TYPE_CHECKING:
    from hubbub.canvas.send import CanvasApp


class GroupResult:
    """The members' Results of a group (or of a chord's header), in order.

    Args:
        app: where results are read.
        id: the group's id (``GroupResult.restore(hub, id)`` finds it again).
        results: one Result per member (a member that is a chain: its last task's).

    Attributes:
        parent: the Result before the group in a chain, if any.
    """

    def __init__(self, app: ResultsClient, id: str, results: Sequence[Result[Any]]) -> None:
        self.app = app
        self.id = id
        self.results = list(results)
        self.parent: Result[Any] | GroupResult | None = None

    def __repr__(self) -> str:
        return f"<GroupResult [{self.id}] of {len(self.results)}>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Any:
        return iter(self.results)

    def __getitem__(self, index: int) -> Result[Any]:
        return self.results[index]

    @classmethod
    def restore(cls, app: CanvasApp, id: str) -> GroupResult:
        """The GroupResult of group ``id``, sent by any process with the same result store.

        Raises:
            ResultError: no group of that id is kept (never sent, or expired), or the hub
                keeps no results.
        """
        ids = app.bridge.run(app.read_group(id))
        if ids is None:
            raise ResultError(f"no group {id!r} in the result store (never sent, or its "
                              "results expired)")
        return cls(app, id, [Result(app, i) for i in ids])

    def _records(self) -> dict[str, ResultRecord]:
        return self.app.bridge.run(self.app.read_results([r.id for r in self.results]))

    def completed_count(self) -> int:
        """How many members succeeded (one round trip)."""
        records = self._records()
        return sum(1 for r in self.results
                   if (rec := records.get(r.id)) is not None and rec.state == State.SUCCESS)

    def ready(self) -> bool:
        """True when every member has finished (succeeded, failed or was revoked)."""
        records = self._records()
        return all((rec := records.get(r.id)) is not None and rec.state in READY_STATES
                   for r in self.results)

    def successful(self) -> bool:
        """True when every member succeeded."""
        return self.completed_count() == len(self.results)

    def failed(self) -> bool:
        """True when any member failed or was revoked."""
        records = self._records()
        return any((rec := records.get(r.id)) is not None
                   and rec.state in (State.FAILURE, State.REVOKED) for r in self.results)

    def get(self, timeout: float | None = None, *, propagate: bool = True) -> list[Any]:
        """Wait for every member; their values in order.

        Args:
            timeout: seconds to wait for all of them; None waits as long as it takes.
            propagate: False puts a failed member's error in the list instead of raising.

        Raises:
            TaskFailed: a member failed (the first in order that did), with ``propagate``.
            TaskRevoked: a member was revoked, with ``propagate``.
            ResultTimeout: not every member finished within ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        records: dict[str, ResultRecord] = {}
        waiting = [r.id for r in self.results]
        # Read all in one round trip, then wait on the last unfinished member (members
        # finish roughly in order, so one wait usually covers the rest) and read again.
        while waiting:
            found = self.app.bridge.run(self.app.read_results(waiting))
            records.update((i, rec) for i, rec in found.items() if rec.ready)
            waiting = [i for i in waiting if i not in records]
            if not waiting:
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ResultTimeout(f"group {self.id} was not done within {timeout}s "
                                    f"({len(records)} of {len(self.results)} finished)")
            record = self.app.bridge.run(self.app.wait_result(waiting[-1], left))
            if record is not None:
                records[waiting[-1]] = record
        # Result turns each record into its value or error, as Result.get would.
        return [r._unwrap(records[r.id], timeout, propagate) for r in self.results]

    def revoke(self, *, terminate: bool = False) -> list[str]:
        """Revoke every member that has not finished; the ids it took effect for."""
        return self.app.bridge.run(self.app.revoke([r.id for r in self.results],
                                                   terminate=terminate))
