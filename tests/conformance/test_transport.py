"""One body of behaviour every transport must show, run unchanged against each broker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from hubbub.clock import FakeClock
from hubbub.transports import DeadLetterRequest, Outgoing, Transport, open_transport
from tests.conftest import Broker, eventually

LEASE = 1.0  # beanstalkd's TTR has whole-second granularity: 1 s is the shortest lease


def out(body: str, queue: str = "q", priority: int = 0, eta: float | None = None) -> Outgoing:
    return Outgoing(queue, body.encode(), uuid.uuid4().hex, priority, eta)


async def fetch_all(t: Transport, queues: list[str], n: int, wait: float = 5.0) -> list:
    """Fetch until ``n`` deliveries arrived or ``wait`` ran out."""
    got: list = []
    deadline = time.monotonic() + wait
    while len(got) < n and time.monotonic() < deadline:
        got += await t.fetch(queues, limit=n - len(got), lease=30, wait=0.5)
    return got


async def test_published_message_is_fetched_once_and_gone_after_ack(broker: Broker) -> None:
    t = await broker.open()
    item = out("hello")
    await t.publish([item])
    [d] = await fetch_all(t, ["q"], 1)
    assert (d.body, d.id, d.queue, d.attempts) == (b"hello", item.id, "q", 1)
    assert await t.fetch(["q"], limit=10, lease=30, wait=0.3) == []
    await t.ack([d])
    [stats] = await t.stats(["q"])
    assert (stats.ready, stats.leased, stats.delayed) == (0, 0, 0)


async def test_fetch_returns_empty_after_wait_on_empty_queue(broker: Broker) -> None:
    t = await broker.open()
    started = time.monotonic()
    assert await t.fetch(["empty"], limit=5, lease=LEASE, wait=0.3) == []
    assert time.monotonic() - started < 5


async def test_waiting_fetch_wakes_when_a_message_arrives(broker: Broker) -> None:
    consumer, producer = await broker.open(), await broker.open()
    fetching = asyncio.create_task(consumer.fetch(["q"], limit=1, lease=30, wait=8))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await producer.publish([out("late")])
    [d] = await asyncio.wait_for(fetching, 8)
    assert d.body == b"late"
    assert time.monotonic() - started < 4, "fetch slept through its wait instead of waking"


async def test_delivery_of_a_consumer_that_went_away_returns_after_the_lease(
    broker: Broker,
) -> None:
    first, second = await broker.open(), await broker.open()
    await first.publish([out("work")])
    [d1] = list(await fetch_all_leased(first, LEASE))
    await first.close()  # the consumer died: no ack, no renewal, connection gone
    started = time.monotonic()
    got = await fetch_all(second, ["q"], 1, wait=LEASE + 8)
    assert [d.id for d in got] == [d1.id]
    assert got[0].attempts == 2
    assert time.monotonic() - started < LEASE + 8


async def fetch_all_leased(t: Transport, lease: float) -> list:
    got: list = []
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        got = await t.fetch(["q"], limit=1, lease=lease, wait=0.5)
    assert got
    return got


async def test_extended_lease_prevents_redelivery_of_a_long_task(broker: Broker) -> None:
    holder, other = await broker.open(), await broker.open()
    await holder.publish([out("long")])
    [d] = await fetch_all_leased(holder, LEASE)
    deadline = time.monotonic() + 3 * LEASE + 0.5
    while time.monotonic() < deadline:
        assert await holder.extend([d], lease=LEASE) == []
        assert await other.fetch(["q"], limit=1, lease=LEASE, wait=LEASE / 3) == []
    await holder.ack([d])
    assert await other.fetch(["q"], limit=1, lease=LEASE, wait=LEASE + 1.5) == []


async def test_release_makes_the_message_visible_at_once_without_counting_an_attempt(
    broker: Broker,
) -> None:
    t = await broker.open()
    await t.publish([out("again")])
    [d] = await fetch_all(t, ["q"], 1)
    await t.release([d])
    [d2] = await fetch_all(t, ["q"], 1)
    assert d2.id == d.id
    assert d2.attempts == 1
    await t.ack([d2])


async def test_release_with_delay_hides_the_message_until_then(broker: Broker) -> None:
    t = await broker.open()
    await t.publish([out("later")])
    [d] = await fetch_all(t, ["q"], 1)
    released_at = time.time()
    await t.release([d], delay=1.5)
    assert await t.fetch(["q"], limit=1, lease=30, wait=0.5) == []
    [d2] = await fetch_all(t, ["q"], 1, wait=8)
    assert time.time() >= released_at + 1.4
    await t.ack([d2])


async def test_delayed_message_is_held_by_the_broker_until_its_eta(broker: Broker) -> None:
    t = await broker.open()
    eta = time.time() + 1.5
    await t.publish([out("delayed", eta=eta)])
    assert await t.fetch(["q"], limit=1, lease=30, wait=0.3) == []
    [stats] = await t.stats(["q"])
    assert stats.delayed == 1
    assert stats.ready == 0
    [d] = await fetch_all(t, ["q"], 1, wait=10)
    assert time.time() >= eta - 0.05
    assert d.body == b"delayed"


async def test_higher_priority_first_and_fifo_within_a_priority(broker: Broker) -> None:
    t = await broker.open()
    items = [out("low", priority=0), out("mid-1", priority=5), out("high", priority=9),
             out("mid-2", priority=5)]
    for item in items:  # one by one, so the publish order is the FIFO order
        await t.publish([item])
    await asyncio.sleep(0.1)
    got = []
    for _ in range(4):
        [d] = await fetch_all(t, ["q"], 1)
        got.append(d.body.decode())
        await t.ack([d])
    if t.capabilities.priorities:
        assert got == ["high", "mid-1", "mid-2", "low"]
    else:
        assert got == ["low", "mid-1", "high", "mid-2"]


async def test_fetch_reads_only_the_queues_it_names(broker: Broker) -> None:
    t = await broker.open()
    await t.publish([out("a", queue="qa"), out("b", queue="qb")])
    [d] = await fetch_all(t, ["qa"], 1)
    assert d.body == b"a"
    assert await t.fetch(["qa"], limit=5, lease=30, wait=0.2) == []
    [d2] = await fetch_all(t, ["qa", "qb"], 1)
    assert (d2.body, d2.queue) == (b"b", "qb")


async def test_batches_publish_and_fetch_many_at_once(broker: Broker) -> None:
    t = await broker.open()
    await t.publish([out(f"m{i}") for i in range(50)])
    got = await fetch_all(t, ["q"], 20)
    assert len(got) == 20
    assert len({d.id for d in got}) == 20
    await t.ack(got)
    rest = await fetch_all(t, ["q"], 30)
    assert len(rest) == 30
    await t.ack(rest)
    [stats] = await t.stats(["q"])
    assert (stats.ready, stats.leased) == (0, 0)


async def test_dead_letter_keeps_reason_and_can_be_requeued(broker: Broker) -> None:
    t = await broker.open()
    item = out("poison")
    await t.publish([item])
    [d] = await fetch_all(t, ["q"], 1)
    await t.dead_letter([DeadLetterRequest(d, "unknown task 'nope'")])
    assert await t.fetch(["q"], limit=1, lease=30, wait=0.3) == []
    await eventually(lambda: _dead_count(t, 1))
    [dead] = await t.list_dead("q")
    assert (dead.id, dead.queue, dead.body, dead.reason) == (item.id, "q", b"poison",
                                                            "unknown task 'nope'")
    assert await t.requeue_dead([item.id]) == 1
    [again] = await fetch_all(t, ["q"], 1)
    assert again.body == b"poison"
    await t.ack([again])
    assert await t.list_dead("q") == []


async def _dead_count(t: Transport, n: int) -> bool:
    [stats] = await t.stats(["q"])
    return stats.dead == n


async def opened(broker: Broker, **options: Any) -> Transport:
    """A connected transport of ``broker`` built with ``options`` (closed by the fixture)."""
    transport = open_transport(broker.url, **options)
    broker.opened.append(transport)
    await transport.connect()
    return transport


def envelope(task: object) -> bytes:
    return json.dumps({"v": 1, "id": uuid.uuid4().hex, "task": task, "args": []}).encode()


async def kill(t: Transport, items: list[Outgoing], reason: str = "refused") -> None:
    """Publish ``items``, then dead-letter them one batch at a time, in order."""
    await t.publish(items)
    queues = sorted({i.queue for i in items})
    got = {d.id: d for d in await fetch_all(t, queues, len(items))}
    assert set(got) == {i.id for i in items}
    for i in items:
        await t.dead_letter([DeadLetterRequest(got[i.id], reason)])


async def _dead_ids(t: Transport, queue: str | None = None) -> list[str]:
    return [d.id for d in await t.list_dead(queue, limit=1000)]


async def test_delete_dead_removes_only_the_named_dead_letters(broker: Broker) -> None:
    t = await broker.open()
    items = [out(f"dead{i}") for i in range(3)] + [out("other", queue="q2")]
    await kill(t, items)
    await eventually(lambda: _listed(t, 4))
    assert await t.delete_dead([items[0].id, items[3].id, "no-such-id"]) == 2
    assert await t.delete_dead([]) == 0
    await eventually(lambda: _listed(t, 2))
    assert sorted(await _dead_ids(t)) == sorted(i.id for i in items[1:3])


async def _listed(t: Transport, n: int) -> bool:
    return len(await t.list_dead(None, limit=1000)) == n


async def test_purge_dead_removes_what_matches_task_queue_and_age(broker: Broker) -> None:
    t = await broker.open()
    pay, ship, pay2 = (Outgoing("q", envelope("shop.pay"), "pay"),
                       Outgoing("q", envelope("shop.ship"), "ship"),
                       Outgoing("q2", envelope("shop.pay"), "pay2"))
    foreign = [Outgoing("q", b"\x00 not json {", "raw"),
               Outgoing("q", envelope(5), "odd-task"),
               Outgoing("q", b"[1, 2]", "list")]
    await kill(t, [pay, ship, pay2, *foreign])
    await eventually(lambda: _listed(t, 6))
    assert await t.purge_dead(older_than=3600) == 0
    assert await t.purge_dead(task="shop.pay", queue="q") == 1
    assert await t.purge_dead(task="shop.pay") == 1  # the one of q2
    assert await t.purge_dead(task="nope") == 0
    assert sorted(await _dead_ids(t)) == sorted(["ship", "raw", "odd-task", "list"])
    assert await t.purge_dead(queue="q2") == 0
    assert await t.purge_dead(queue="q", older_than=0) == 4
    assert await t.list_dead(None) == []


async def test_dead_letters_past_the_cap_drop_the_oldest_first(broker: Broker) -> None:
    t = await opened(broker, dead_max=3)
    other = out("other", queue="q2")
    await kill(t, [other])
    items = [out(f"dead{i}") for i in range(5)]
    await kill(t, items)
    await eventually(lambda: _stats_dead(t, "q", 3))
    assert await _dead_ids(t, "q") == [i.id for i in items[2:]]
    assert await _dead_ids(t, "q2") == [other.id]


async def _stats_dead(t: Transport, queue: str, n: int) -> bool:
    [stats] = await t.stats([queue])
    return stats.dead == n


async def test_dead_letters_past_the_retention_are_not_listed(broker: Broker) -> None:
    clock = FakeClock(time.time())
    t = await opened(broker, clock=clock, dead_ttl=60)
    old, new = out("old"), out("new")
    await t.publish([old, new])
    got = {d.id: d for d in await fetch_all(t, ["q"], 2)}
    await t.dead_letter([DeadLetterRequest(got[old.id], "old")])
    clock.advance(61)
    await t.dead_letter([DeadLetterRequest(got[new.id], "new")])
    await eventually(lambda: _dead_ids_are(t, [new.id]))


async def _dead_ids_are(t: Transport, ids: list[str]) -> bool:
    return await _dead_ids(t, "q") == ids


async def test_purge_removes_waiting_messages_and_counts_them(broker: Broker) -> None:
    t = await broker.open()
    await t.publish([out(f"m{i}") for i in range(5)])
    await eventually(lambda: _ready(t, 5))
    assert await t.purge("q") == 5
    assert await t.fetch(["q"], limit=5, lease=30, wait=0.2) == []


async def _ready(t: Transport, n: int) -> bool:
    [stats] = await t.stats(["q"])
    return stats.ready == n


async def test_stats_count_ready_delayed_and_leased(broker: Broker) -> None:
    t = await broker.open()
    await t.publish([out("r1"), out("r2"), out("d", eta=time.time() + 60)])
    [d] = await fetch_all(t, ["q"], 1)
    await eventually(lambda: _stats_are(t, ready=1, delayed=1, leased=1))
    await t.ack([d])


async def _stats_are(t: Transport, **expected: int) -> bool:
    [stats] = await t.stats(["q"])
    return all(getattr(stats, k) == v for k, v in expected.items())


async def test_two_consumers_never_get_the_same_live_message(broker: Broker) -> None:
    a, b = await broker.open(), await broker.open()
    await a.publish([out(f"m{i}") for i in range(100)])
    seen: list[str] = []

    async def consume(t: Transport) -> None:
        misses = 0
        while misses < 3:
            got = await t.fetch(["q"], limit=7, lease=30, wait=0.3)
            misses = 0 if got else misses + 1
            seen.extend(d.id for d in got)
            await t.ack(got)

    await asyncio.wait_for(asyncio.gather(consume(a), consume(b)), 60)
    assert len(seen) == 100
    assert len(set(seen)) == 100


async def test_stale_holder_cannot_ack_or_extend_a_message_leased_again(broker: Broker) -> None:
    first, second = await broker.open(), await broker.open()
    await first.publish([out("contended")])
    [stale] = await fetch_all_leased(first, LEASE)
    if first.capabilities.connection_bound_lease:
        await first.close()  # the lease ends with the connection on this broker
    [fresh] = await fetch_all(second, ["q"], 1, wait=LEASE + 8)
    assert fresh.attempts == 2
    if not first.capabilities.connection_bound_lease:
        assert await first.extend([stale], lease=30) == [stale]
        await first.ack([stale])  # a no-op: the lease belongs to `second` now
        await eventually(lambda: _stats_are(second, leased=1))
    await second.ack([fresh])
    await eventually(lambda: _stats_are(second, leased=0, ready=0))


async def test_async_with_connects_on_entry_and_closes_on_exit_even_after_an_error(
    broker: Broker,
) -> None:
    other = await broker.open()
    transport = open_transport(broker.url)
    closes = 0
    close = transport.close

    async def counted_close() -> None:
        nonlocal closes
        closes += 1
        await close()

    transport.close = counted_close  # type: ignore[method-assign]
    held = []

    async def block() -> None:
        async with transport as t:  # no connect(): entering the block connects
            assert t is transport
            await t.publish([out("held")])
            held.extend(await fetch_all_leased(t, LEASE))
            raise RuntimeError("the block failed")

    with pytest.raises(RuntimeError, match="the block failed"):
        await block()
    assert closes == 1
    [again] = await fetch_all(other, ["q"], 1, wait=LEASE + 8)
    assert [(again.id, again.attempts)] == [(d.id, 2) for d in held]
    await other.ack([again])
