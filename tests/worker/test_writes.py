"""The write buffer and STARTED records: each waits a moment in the buffer, so that a short
task's SUCCESS replaces it and its worker writes one record, not two; it is still written
when nothing else comes, and at shutdown, and acks still follow the records they settle (on
the in-process broker and store, whose writes the test logs)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from hubbub import Hub
from hubbub.results.base import ResultBackend, ResultRecord, State
from hubbub.transports.base import Delivery, Outgoing, Transport
from hubbub.worker import writes as writes_module
from hubbub.worker.writes import WriteBuffer


class LoggedTransport:
    def __init__(self, inner: Transport, log: list[tuple[str, list[Any]]]) -> None:
        self.inner, self.log = inner, log

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        self.log.append(("ack", [d.id for d in deliveries]))
        await self.inner.ack(deliveries)


class LoggedStore:
    def __init__(self, inner: ResultBackend, log: list[tuple[str, list[Any]]]) -> None:
        self.inner, self.log = inner, log

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def store(self, records: Sequence[ResultRecord], *, ttl: float | None) -> None:
        self.log.append(("store", [(r.id, r.state) for r in records]))
        await self.inner.store(records, ttl=ttl)


@dataclass
class Bench:
    log: list[tuple[str, list[Any]]]
    results: ResultBackend
    writes: WriteBuffer
    delivery: Delivery


@pytest.fixture
async def bench() -> AsyncIterator[Bench]:
    url = f"memory://writes-{uuid.uuid4().hex}"
    hub = Hub(url, results=url)
    inner, results = hub.open_transport(), hub.open_results()
    assert results is not None
    await inner.connect()
    await results.connect()
    await inner.publish([Outgoing("default", b"body", "job-1")])
    [delivery] = await inner.fetch(["default"], limit=1, lease=30, wait=0)
    log: list[tuple[str, list[Any]]] = []
    writes = WriteBuffer(LoggedTransport(inner, log), LoggedStore(results, log),  # type: ignore[arg-type]
                         60)
    flusher = asyncio.create_task(writes.flush_forever())
    try:
        yield Bench(log, results, writes, delivery)
    finally:
        writes.closing = True
        writes.wake()
        await asyncio.wait_for(flusher, 10)
        await inner.close()
        await results.close()
        hub.close()


async def until(check: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not check():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.005)


async def test_a_started_record_replaced_by_its_success_is_never_written(
        bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writes_module, "STARTED_WAIT", 3600.0)  # only company flushes it
    bench.writes.record(ResultRecord("job-1", State.STARTED, "t", started_at=1.0))
    for _ in range(20):  # the flusher has every chance to run
        await asyncio.sleep(0)
    assert bench.log == []
    bench.writes.record(ResultRecord("job-1", State.SUCCESS, "t", 5, started_at=1.0))
    bench.writes.ack([bench.delivery])
    await until(lambda: ("ack", ["job-1"]) in bench.log, "the task acked")
    assert bench.log == [("store", [("job-1", State.SUCCESS)]), ("ack", ["job-1"])]
    stored = (await bench.results.get(["job-1"])).get("job-1")
    assert stored is not None
    assert (stored.state, stored.started_at) == (State.SUCCESS, 1.0)


async def test_a_fresh_started_record_waits_while_other_tasks_writes_go(
        bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writes_module, "STARTED_WAIT", 3600.0)
    bench.writes.record(ResultRecord("long", State.STARTED, "t"))
    bench.writes.record(ResultRecord("job-1", State.SUCCESS, "t", 5))
    bench.writes.ack([bench.delivery])
    await until(lambda: ("ack", ["job-1"]) in bench.log, "the task acked")
    assert bench.log == [("store", [("job-1", State.SUCCESS)]), ("ack", ["job-1"])]
    bench.writes.record(ResultRecord("long", State.SUCCESS, "t", 6))
    await until(lambda: len(bench.log) == 3, "the long task's record written")
    assert bench.log[2] == ("store", [("long", State.SUCCESS)])


async def test_a_started_record_alone_is_still_written(bench: Bench) -> None:
    bench.writes.record(ResultRecord("long", State.STARTED, "t"))
    await until(lambda: bench.log, "the STARTED record written")
    assert bench.log == [("store", [("long", State.STARTED)])]
    stored = (await bench.results.get(["long"])).get("long")
    assert stored is not None
    assert stored.state == State.STARTED


async def test_a_started_record_left_at_shutdown_is_written(
        bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writes_module, "STARTED_WAIT", 3600.0)
    bench.writes.record(ResultRecord("long", State.STARTED, "t"))
    bench.writes.closing = True
    bench.writes.wake()
    await until(lambda: bench.log, "the STARTED record written")
    assert bench.log == [("store", [("long", State.STARTED)])]
