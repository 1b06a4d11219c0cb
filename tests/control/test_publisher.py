"""The worker's event publisher: batched, bounded, off by default, and never in the way."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from hubbub import Hub, WorkerLoop
from hubbub.control.plane import MemoryPlane, Subscription
from hubbub.control.publisher import EventPublisher
from hubbub.control.wire import WireEvent, decode_batch
from hubbub.errors import TransportUnavailable
from hubbub.events import EventBus, TaskSucceeded
from hubbub.transports.base import Outgoing
from hubbub.worker.pools import make_pool
from tests.conftest import eventually


class SwitchedPlane(MemoryPlane):
    """An in-process plane whose writes fail while ``down``, and which counts writes."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.down = False
        self.writes = 0

    async def publish(self, channel: str, messages: Sequence[bytes]) -> None:
        if self.down:
            raise TransportUnavailable("the plane is down")
        self.writes += 1
        await super().publish(channel, messages)


async def read_events(sub: Subscription, until: int, timeout: float = 10) -> list[WireEvent]:
    got: list[WireEvent] = []

    async def enough() -> bool:
        for body in await sub.read(wait=0.05):
            got.extend(decode_batch(body))
        return len(got) >= until

    await eventually(enough, timeout)
    return got


def succeeded(i: int) -> TaskSucceeded:
    return TaskSucceeded(f"id{i}", "t", 0.1, "w")


async def test_events_are_published_in_batches_in_order() -> None:
    name = uuid.uuid4().hex
    bus, plane = EventBus(), SwitchedPlane(name)
    sub = await MemoryPlane(name).subscribe("events")
    publisher = EventPublisher(bus, plane, every=0.05, batch=100)
    publisher.start()
    for i in range(250):
        bus.emit(succeeded(i))
    got = await read_events(sub, 250)
    assert [e.id for e in got] == [f"id{i}" for i in range(250)]
    assert plane.writes <= 5  # batches, not one write per event
    await publisher.close()
    assert not bus.listening  # closed: the bus is left


async def test_a_busy_worker_writes_once_per_interval_with_every_batch_in_that_write(
) -> None:
    name = uuid.uuid4().hex
    bus, plane = EventBus(), SwitchedPlane(name)
    sub = await MemoryPlane(name).subscribe("events")
    publisher = EventPublisher(bus, plane, every=0.3, batch=100, capacity=10_000)
    publisher.start()
    for i in range(2500):  # far more than a batch, less than half the buffer
        bus.emit(succeeded(i))
    got = await read_events(sub, 2500)
    assert [e.id for e in got] == [f"id{i}" for i in range(2500)]
    assert plane.writes == 1  # one round trip for 25 messages, not 25
    await publisher.close()


async def test_a_half_full_buffer_is_written_without_waiting_for_the_interval() -> None:
    name = uuid.uuid4().hex
    bus, plane = EventBus(), SwitchedPlane(name)
    sub = await MemoryPlane(name).subscribe("events")
    publisher = EventPublisher(bus, plane, every=60, batch=100, capacity=1000)
    publisher.start()
    for i in range(501):
        bus.emit(succeeded(i))
    got = await read_events(sub, 500, timeout=5)
    assert [e.id for e in got][:500] == [f"id{i}" for i in range(500)]
    await publisher.close()


async def test_a_full_buffer_drops_the_oldest_and_counts_them() -> None:
    name = uuid.uuid4().hex
    bus = EventBus()
    publisher = EventPublisher(bus, SwitchedPlane(name), capacity=10, batch=1000)
    bus.subscribe(publisher.capture)
    for i in range(25):
        bus.emit(succeeded(i))
    assert publisher.dropped == 15
    assert [e.id for _, e in publisher.buffer] == [f"id{i}" for i in range(15, 25)]  # type: ignore[union-attr]


async def test_a_plane_outage_is_logged_once_and_publishing_recovers(
        caplog: pytest.LogCaptureFixture) -> None:
    name = uuid.uuid4().hex
    bus, plane = EventBus(), SwitchedPlane(name)
    sub = await MemoryPlane(name).subscribe("events")
    publisher = EventPublisher(bus, plane, every=0.02, batch=100)
    publisher.start()
    plane.down = True
    with caplog.at_level(logging.WARNING, logger="hubbub.events"):
        for i in range(5):
            bus.emit(succeeded(i))
            await eventually(lambda: _true(not publisher.buffer))
        plane.down = False
        got: list[WireEvent] = []

        async def back() -> bool:  # emits until one arrives: the retry waits a backoff
            bus.emit(succeeded(99))
            for body in await sub.read(wait=0.05):
                got.extend(decode_batch(body))
            return bool(got)

        await eventually(back, timeout=10)
    assert {e.id for e in got} == {"id99"}
    assert publisher.dropped >= 5
    outage = [r for r in caplog.records if "cannot be published" in r.getMessage()]
    assert len(outage) == 1
    await publisher.close()


async def _true(value: bool) -> bool:
    return value


def test_a_worker_with_events_publishes_every_kind_of_task_event() -> None:
    hub = Hub(f"memory://{uuid.uuid4().hex}", lease=5)

    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    @hub.task(retries=1, retry_backoff=0.01, retry_jitter=False)
    def boom() -> None:
        raise RuntimeError("kaput")

    seen: list[str] = []  # an in-process subscriber gets the same events as objects
    hub.events.subscribe(lambda event: seen.append(type(event).__name__))

    async def main() -> list[WireEvent]:
        sub = await hub.open_plane().subscribe("events")
        add.delay_many([(i, i) for i in range(20)])
        boom.delay()
        gone = add.apply_async((0, 0), expires=datetime.now(UTC) - timedelta(seconds=1))
        expired.append(gone.id)

        async def garbage() -> None:
            client = await hub.client()
            await client.transport.publish([Outgoing("default", b"not an envelope", "junk")])

        await hub.bridge.run_async(garbage())
        worker = WorkerLoop(hub, pool=make_pool("threads", 2), events=True,
                            stop_when_idle=True, name="w-events")
        await asyncio.wait_for(worker.run(), 30)
        got: list[WireEvent] = []
        for body in await sub.read(wait=1):
            got.extend(decode_batch(body))
        return got

    expired: list[str] = []
    try:
        got = asyncio.run(main())
    finally:
        hub.close()
    kinds = [e.type for e in got]
    [revoked] = [e for e in got if e.type == "task-revoked"]
    assert revoked.id == expired[0]
    assert "expired" in revoked.data["reason"]
    [dead] = [e for e in got if e.type == "task-dead-lettered"]
    assert dead.queue == "default"
    assert kinds[0] == "worker-online"
    assert kinds[-1] == "worker-offline"
    assert kinds.count("task-succeeded") == 20
    assert kinds.count("task-started") == 22  # boom twice
    assert kinds.count("task-received") == 23  # and the expired one
    assert (seen.count("TaskStarted"), seen.count("TaskReceived")) == (22, 23)
    assert kinds.count("task-retried") == 1
    assert kinds.count("task-failed") == 1
    assert {e.worker for e in got} == {"w-events"}
    assert all(e.runtime is not None for e in got if e.type == "task-succeeded")


def test_a_worker_without_events_builds_none_and_a_hub_with_events_sends_task_sent() -> None:
    quiet = Hub(f"memory://{uuid.uuid4().hex}")
    loud = Hub(f"memory://{uuid.uuid4().hex}", events=True)
    try:
        assert not quiet.events.listening
        assert WorkerLoop(quiet).events is False
        assert WorkerLoop(loud).events is True  # the hub's setting is the worker's default

        @loud.task
        def add(x: int, y: int) -> int:
            return x + y

        async def main() -> list[WireEvent]:
            sub = await loud.open_plane().subscribe("events")
            await asyncio.to_thread(add.delay_many, [(1, 2), (3, 4)])
            return decode_batch((await sub.read(wait=5))[0])

        sent = asyncio.run(main())
        assert [(e.type, e.task, e.queue) for e in sent] == [("task-sent", add.name,
                                                                "default")] * 2
    finally:
        quiet.close()
        loud.close()


def test_the_events_setting_comes_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBBUB_EVENTS", "1")
    hub = Hub("memory://env-events")
    try:
        assert hub.settings.events is True
        assert hub.settings.source("events") == "environment"
    finally:
        hub.close()
