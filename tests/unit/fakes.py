"""Stand-ins for the narrow protocols ``Task`` and ``Result`` depend on (not a Hub)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hubbub import Result
from hubbub._bridge import Bridge
from hubbub.message import Envelope
from hubbub.results import ResultRecord
from hubbub.settings import Settings


class FakeResults:
    """A results client that is not a Hub: records in a dict, on a bridge of its own."""

    def __init__(self) -> None:
        self.bridge = Bridge()
        self.records: dict[str, ResultRecord] = {}
        self.revoked: list[str] = []
        self.forgotten: list[str] = []

    async def read_results(self, ids: Sequence[str]) -> dict[str, ResultRecord]:
        return {i: self.records[i] for i in ids if i in self.records}

    async def wait_result(self, id: str, timeout: float | None) -> ResultRecord | None:
        record = self.records.get(id)
        return record if record is not None and record.ready else None

    async def revoke(self, ids: Sequence[str], *, terminate: bool = False) -> list[str]:
        self.revoked.extend(ids)
        return list(ids)

    async def forget_results(self, ids: Sequence[str]) -> None:
        self.forgotten.extend(ids)


class FakePublisher:
    """A publisher that is not a Hub: it keeps what it is asked to send."""

    def __init__(self, default_queue: str) -> None:
        self.settings = Settings(default_queue=default_queue)
        self.sent: list[Envelope] = []
        self.results = FakeResults()

    def publish(self, envelopes: Sequence[Envelope]) -> list[Result[Any]]:
        self.sent.extend(envelopes)
        return [Result(self.results, e.id, e.task) for e in envelopes]
