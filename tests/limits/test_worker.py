"""The gate inside one worker (on SQLite, in this process): what waits, what is given back,
and what a limit never does (hold a pool slot, count as an attempt, touch unlimited tasks)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub import Hub, Limits, State
from hubbub.errors import ConfigurationError
from hubbub.testing import drain
from hubbub.transports import Outgoing, open_transport
from hubbub.worker.loop import WorkerLoop
from hubbub.worker.pools import make_pool
from hubbub.worker.writes import WriteBuffer


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub(f"sqlite:///{tmp_path / 'hub.db'}", lease=5, limits=Limits(max_deliveries=2))
    try:
        yield h
    finally:
        h.close()


def dead_letters(hub: Hub) -> list[object]:
    async def read() -> list[object]:
        client = await hub.client()
        return list(await client.transport.list_dead())

    return hub.bridge.run(read())


def test_a_one_slot_worker_runs_other_work_while_rate_limited_tasks_wait(hub: Hub) -> None:
    order: list[str] = []

    @hub.task(rate_limit="1/s")
    def paced(name: str) -> None:
        order.append(name)

    @hub.task
    def other(name: str) -> None:
        order.append(name)

    paced.delay_many([(f"p{i}",) for i in range(3)])
    other.delay("o")
    loop_worker = WorkerLoop(hub, pool=make_pool("solo", 1), stop_when_idle=True, grace=30)
    asyncio.run(asyncio.wait_for(loop_worker.run(), 60))
    # Two of the paced tasks wait a second or two for their starts; meanwhile the only slot
    # served "o" (the order among the paced ones is the broker's).
    assert sorted(order) == ["o", "p0", "p1", "p2"]
    assert order.index("o") < sorted(order.index(p) for p in ("p0", "p1", "p2"))[1]


def test_being_put_back_is_neither_an_attempt_nor_a_retry(hub: Hub) -> None:
    @hub.task(concurrency=1)
    def one_at_a_time(i: int) -> int:
        time.sleep(0.1)
        return i

    results = one_at_a_time.delay_many([(i,) for i in range(6)])
    drain(hub, pool=make_pool("threads", 6), timeout=60)
    # With max_deliveries=2, two put-backs counted as deliveries would dead-letter a task.
    assert [r.get(timeout=5) for r in results] == list(range(6))
    records = hub.bridge.run(hub.read_results([r.id for r in results]))
    assert {rec.retries for rec in records.values()} == {0}
    assert dead_letters(hub) == []


def test_a_rate_set_at_runtime_limits_a_task_without_one_and_can_be_lifted(hub: Hub) -> None:
    starts: list[float] = []

    @hub.task
    def free(i: int) -> None:
        starts.append(time.monotonic())

    hub.bridge.run(hub.set_rate_limit(free.name, "5/s"))
    free.delay_many([(i,) for i in range(6)])
    drain(hub, pool=make_pool("threads", 6), timeout=60)
    assert max(starts) - min(starts) >= 5 * 0.2 - 0.05  # five intervals of 0.2 s

    hub.bridge.run(hub.set_rate_limit(free.name, None))
    starts.clear()

    @hub.task(rate_limit="1/h")
    def slow(i: int) -> int:
        return i

    hub.bridge.run(hub.set_rate_limit(slow.name, "1000/s"))  # overrides the option
    results = slow.delay_many([(i,) for i in range(5)])
    free.delay_many([(i,) for i in range(3)])
    drain(hub, pool=make_pool("threads", 6), timeout=60)  # 1/h would take four hours
    assert [r.get(timeout=5) for r in results] == list(range(5))
    assert len(starts) == 3


def test_a_worker_refuses_limited_tasks_without_a_result_store(tmp_path: Path) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}", results="none")
    try:
        @hub.task(concurrency=2)
        def limited() -> None: ...

        with pytest.raises(ConfigurationError, match="has concurrency, which is kept in the "
                                                     "result store"):
            drain(hub, timeout=10)
    finally:
        hub.close()


def test_a_concurrency_key_that_cannot_be_derived_dead_letters_the_task(hub: Hub) -> None:
    def broken_key(customer: str) -> str:
        raise KeyError(customer)

    ran = threading.Event()

    @hub.task(concurrency=1, concurrency_key=broken_key)
    def per_customer(customer: str) -> None:
        ran.set()

    result = per_customer.delay("acme")
    drain(hub, timeout=30)
    assert not ran.is_set()
    assert result.state == State.FAILURE
    [dead] = dead_letters(hub)
    assert "concurrency_key cannot be derived" in dead.reason  # type: ignore[attr-defined]


def test_limits_work_on_the_memory_broker_and_store() -> None:
    hub = Hub("memory://limits-worker-test")
    try:
        running: list[int] = []
        peak: list[int] = [0]
        lock = threading.Lock()

        @hub.task(concurrency=2, rate_limit="100/s")
        def limited(i: int) -> int:
            with lock:
                running.append(i)
                peak[0] = max(peak[0], len(running))
            time.sleep(0.05)
            with lock:
                running.remove(i)
            return i

        results = limited.delay_many([(i,) for i in range(8)])
        drain(hub, pool=make_pool("threads", 8), timeout=60)
        assert [r.get(timeout=5) for r in results] == list(range(8))
        assert peak[0] == 2
    finally:
        hub.close()


def test_a_running_worker_changes_a_rate_for_itself_at_once(hub: Hub) -> None:
    starts: list[float] = []

    @hub.task(rate_limit="1/h")
    def slow(i: int) -> None:
        starts.append(time.monotonic())

    loop_worker = WorkerLoop(hub, pool=make_pool("threads", 4), grace=30)

    async def run() -> None:
        serving = asyncio.create_task(loop_worker.run())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:  # until the worker is wired to its store
            try:
                await loop_worker.set_rate_limit(slow.name, "20/s")
                break
            except ConfigurationError:
                assert loop.time() < deadline, "the worker never came up"
                await asyncio.sleep(0.01)
        with pytest.raises(ConfigurationError, match="not a rate"):
            await loop_worker.set_rate_limit(slow.name, "lots")
        await asyncio.to_thread(slow.delay_many, [(i,) for i in range(5)])
        while len(starts) < 5:  # at 1/h, the second would start in an hour
            assert loop.time() < deadline, f"only {len(starts)} started"
            await asyncio.sleep(0.02)
        loop_worker.stop()
        await asyncio.wait_for(serving, 30)

    asyncio.run(run())
    assert len(starts) == 5
    assert max(starts) - min(starts) >= 4 * 0.05 - 0.01  # 20/s: four intervals of 50 ms
    stored = hub.bridge.run(_rates(hub))
    assert stored == {slow.name: "20/s"}


async def _rates(hub: Hub) -> dict[str, str]:
    client = await hub.client()
    assert client.results is not None
    return await client.results.limits().rates()


def test_unique_jobs_hold_on_the_async_send_path_too(hub: Hub) -> None:
    @hub.task(unique=("order_id",))
    def charge(order_id: int) -> int:
        return order_id

    async def send() -> list[str]:
        ids = [(await charge.delay_async(1)).id, (await charge.delay_async(1)).id]
        async with hub.connected():  # this loop's own connections, no bridge hop
            ids.append((await charge.delay_async(1)).id)
            ids.append((await charge.delay_async(2)).id)
        return ids

    first, again, inside, other = asyncio.run(send())
    assert first == again == inside
    assert other != first
    drain(hub, timeout=30)


async def test_a_delivery_given_back_by_a_gate_returns_when_due_and_not_as_an_attempt(
        ) -> None:
    transport = open_transport("memory://limits-release-until")
    await transport.connect()
    try:
        await transport.publish([Outgoing("q", b"body", "m1")])
        [first] = await transport.fetch(["q"], limit=1, lease=30, wait=0)
        writes = WriteBuffer(transport, None, None)
        flusher = asyncio.create_task(writes.flush_forever())
        writes.release_until(first, time.time() + 0.3)
        loop = asyncio.get_running_loop()
        asked = loop.time()
        again = []
        while not again:
            again = await transport.fetch(["q"], limit=1, lease=30, wait=0.05)
            assert loop.time() - asked < 10, "never came back"
        assert loop.time() - asked >= 0.25  # not before its time (to the tenth)
        assert again[0].attempts == first.attempts  # a release is not an attempt
        writes.closing = True
        writes.wake()
        await asyncio.wait_for(flusher, 10)
    finally:
        await transport.close()
