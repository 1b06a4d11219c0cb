"""The write buffer and STARTED records: each waits a moment in the buffer, so that a short
task's SUCCESS replaces it and its worker writes one record, not two; it is still written
when nothing else comes, and at shutdown, and acks still follow the records they settle (on
the in-process broker and store, whose writes the test logs). A flush gathers the writes of
tasks that finish just after the first, and on the SQLite broker's own file a flush's records
and acks go in one write."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hubbub import Hub
from hubbub.results.base import ResultBackend, ResultRecord, State
from hubbub.results.sqlite import SQLiteResults
from hubbub.transports.base import Delivery, Outgoing, Transport
from hubbub.transports.sqlite import SQLiteTransport
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

    async def release(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        self.log.append(("release", [d.id for d in deliveries]))
        await self.inner.release(deliveries, delay=delay)


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
    second: Delivery


@pytest.fixture
async def bench() -> AsyncIterator[Bench]:
    url = f"memory://writes-{uuid.uuid4().hex}"
    hub = Hub(url, results=url)
    inner, results = hub.open_transport(), hub.open_results()
    assert results is not None
    await inner.connect()
    await results.connect()
    await inner.publish([Outgoing("default", b"body", "job-1"),
                         Outgoing("default", b"body", "job-2")])
    [delivery, second] = await inner.fetch(["default"], limit=2, lease=30, wait=0)
    log: list[tuple[str, list[Any]]] = []
    writes = WriteBuffer(LoggedTransport(inner, log), LoggedStore(results, log),  # type: ignore[arg-type]
                         60)
    flusher = asyncio.create_task(writes.flush_forever())
    try:
        yield Bench(log, results, writes, delivery, second)
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


async def test_a_flush_gathers_the_writes_of_tasks_finishing_just_after(bench: Bench) -> None:
    def second_finishes() -> None:  # as the next outcome read from a prefork child would
        bench.writes.record(ResultRecord("job-2", State.SUCCESS, "t", 2))
        bench.writes.ack([bench.second])

    bench.writes.record(ResultRecord("job-1", State.SUCCESS, "t", 1))
    bench.writes.ack([bench.delivery])  # wakes the flusher: it runs first, then this
    asyncio.get_running_loop().call_soon(second_finishes)
    await until(lambda: len(bench.log) == 2, "both tasks acked")
    assert bench.log == [("store", [("job-1", State.SUCCESS), ("job-2", State.SUCCESS)]),
                         ("ack", ["job-1", "job-2"])]


async def test_settled_waits_for_the_releases_queued_before(bench: Bench) -> None:
    # What a message run alone relies on: what it held with it is given back before it
    # starts (it may kill the worker; an unwritten release would count as an attempt).
    bench.writes.release([bench.delivery])
    bench.writes.release_until(bench.second, 0.0)
    await bench.writes.settled()
    assert bench.log == [("release", ["job-1"]), ("release", ["job-2"])]


async def test_on_the_brokers_sqlite_file_records_and_acks_go_in_one_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = Hub(url, results=url)
    transport, results = hub.open_transport(), hub.open_results()
    assert results is not None
    await transport.connect()
    await results.connect()
    writes = WriteBuffer(transport, results, 60)
    flusher = asyncio.create_task(writes.flush_forever())
    try:
        await transport.publish([Outgoing("default", b"body", "job-1")])
        [delivery] = await transport.fetch(["default"], limit=1, lease=30, wait=0)

        async def apart(*_: object, **__: object) -> None:
            raise AssertionError("written apart")

        monkeypatch.setattr(SQLiteResults, "store", apart)
        monkeypatch.setattr(SQLiteTransport, "ack", apart)
        writes.record(ResultRecord("job-1", State.SUCCESS, "t", 5))
        writes.ack([delivery])
        await writes.settled()
        assert (await results.get(["job-1"]))["job-1"].value == 5
        [stats] = await transport.stats(["default"])
        assert (stats.ready, stats.leased) == (0, 0)
    finally:
        writes.closing = True
        writes.wake()
        await asyncio.wait_for(flusher, 10)
        await transport.close()
        await results.close()
        hub.close()
