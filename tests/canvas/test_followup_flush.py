"""The write buffer and a chain's next step: the step is published at once, even while an
earlier flush is still writing, and still before its own task's record and ack (on the
in-process broker and store, whose writes the test holds up and logs)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from hubbub import Hub, chain
from hubbub.canvas.freeze import freeze
from hubbub.canvas.send import NO_PARENT, Launcher
from hubbub.errors import TransportUnavailable
from hubbub.message import Envelope, encode
from hubbub.results.base import ResultBackend, ResultRecord, State
from hubbub.transports.base import Delivery, Outgoing, Transport
from hubbub.worker.followups import FollowUps
from hubbub.worker.writes import WriteBuffer


class LoggedTransport:
    """The broker, logging each publish and ack; ``fail_publishes`` publishes fail first."""

    def __init__(self, inner: Transport, log: list[tuple[str, list[str]]]) -> None:
        self.inner, self.log, self.fail_publishes = inner, log, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def publish(self, items: Sequence[Outgoing]) -> None:
        if self.fail_publishes:
            self.fail_publishes -= 1
            self.log.append(("publish failed", [i.id for i in items]))
            raise TransportUnavailable("the test cut the broker off")
        self.log.append(("publish", [i.id for i in items]))
        await self.inner.publish(items)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        self.log.append(("ack", [d.id for d in deliveries]))
        await self.inner.ack(deliveries)


class HeldStore:
    """The result store, whose writes wait for ``go`` and are logged."""

    def __init__(self, inner: ResultBackend, log: list[tuple[str, list[str]]]) -> None:
        self.inner, self.log, self.go = inner, log, asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def store(self, records: Sequence[ResultRecord], *, ttl: float | None) -> None:
        self.log.append(("store", [r.id for r in records]))
        await self.go.wait()
        await self.inner.store(records, ttl=ttl)


@dataclass
class Bench:
    hub: Hub
    log: list[tuple[str, list[str]]]
    transport: LoggedTransport
    store: HeldStore
    writes: WriteBuffer
    first: Envelope
    delivery: Delivery


@pytest.fixture
async def bench() -> AsyncIterator[Bench]:
    url = f"memory://followup-flush-{uuid.uuid4().hex}"
    hub = Hub(url, results=url)

    @hub.task(name="flush.inc")
    def inc(x: int) -> int:
        return x + 1

    first, *_ = Launcher(hub.tasks, "default").launch(
        freeze(chain(inc.s(0), inc.s(), inc.s()), fed=False), NO_PARENT).envelopes
    inner, results = hub.open_transport(), hub.open_results()
    assert results is not None
    await inner.connect()
    await results.connect()
    await inner.publish([Outgoing("default", encode(first, hub.codec), first.id)])
    [delivery] = await inner.fetch(["default"], limit=1, lease=30, wait=0)
    log: list[tuple[str, list[str]]] = []
    transport, store = LoggedTransport(inner, log), HeldStore(results, log)
    writes = WriteBuffer(transport, store, 60)  # type: ignore[arg-type]
    flusher = asyncio.create_task(writes.flush_forever())
    try:
        yield Bench(hub, log, transport, store, writes, first, delivery)
    finally:
        store.go.set()
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


def finish_first_step(b: Bench) -> str:
    """What the worker queues when the chain's first step succeeded: its next step, its
    record, its ack. The next step's id."""
    follow = FollowUps(b.hub, 1 << 20).succeeded(b.first, 1)
    assert follow is not None
    [step] = follow.plan.envelopes
    b.writes.follow_up(follow)
    b.writes.record(ResultRecord(b.first.id, State.SUCCESS, b.first.task, 1))
    b.writes.ack([b.delivery])
    return step.id


async def test_a_next_step_is_published_while_an_earlier_flush_still_writes(
        bench: Bench) -> None:
    bench.writes.record(ResultRecord("earlier", State.STARTED, "flush.inc"))
    await until(lambda: ("store", ["earlier"]) in bench.log, "the first flush is under way")
    step = finish_first_step(bench)
    await until(lambda: ("publish", [step]) in bench.log, "the next step is published")
    # ... while the earlier flush is still held, and before the first step's own writes.
    assert bench.log == [("store", ["earlier"]), ("publish", [step])]
    bench.store.go.set()
    await until(lambda: ("ack", [bench.delivery.id]) in bench.log, "the first step acked")
    assert bench.log == [("store", ["earlier"]), ("publish", [step]),
                         ("store", [bench.first.id]), ("ack", [bench.delivery.id])]


async def test_a_next_step_whose_early_publish_failed_goes_with_its_own_flush(
        bench: Bench) -> None:
    bench.writes.record(ResultRecord("earlier", State.STARTED, "flush.inc"))
    await until(lambda: ("store", ["earlier"]) in bench.log, "the first flush is under way")
    bench.transport.fail_publishes = 1
    step = finish_first_step(bench)
    await until(lambda: ("publish failed", [step]) in bench.log, "the early publish failed")
    bench.store.go.set()
    await until(lambda: ("ack", [bench.delivery.id]) in bench.log, "the first step acked")
    assert bench.log == [("store", ["earlier"]), ("publish failed", [step]), ("publish", [step]),
                         ("store", [bench.first.id]), ("ack", [bench.delivery.id])]
