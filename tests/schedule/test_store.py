"""The schedule store: one lease holder at a time, and each slot claimed at most once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hubbub import ConfigurationError, Hub
from hubbub.clock import FakeClock
from hubbub.schedule.store import ScheduleStore, open_store
from hubbub.schedule.stores import memory
from hubbub.schedule.stores.memory import MemoryScheduleStore
from hubbub.schedule.stores.redis import RedisScheduleStore
from hubbub.schedule.stores.sqlite import SQLiteScheduleStore
from tests import brokers

STORES = ["memory", "sqlite", "redis"]


@dataclass
class Store:
    """A store under test, a second handle on the same state, and a way to let time pass."""

    one: ScheduleStore
    two: ScheduleStore
    clock: FakeClock | None  # None: Redis expires leases on its own clock

    async def pass_time(self, seconds: float) -> None:
        if self.clock is not None:
            self.clock.advance(seconds)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds + 5.0
        while await self.one.leader() is not None:
            assert loop.time() < deadline, "the lease did not expire"
            await asyncio.sleep(0.01)


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    module = brokers.load(request.param)
    brokers.require(module)
    run_id = "t" + uuid.uuid4().hex[:10]
    url = module.results_url(tmp_path, run_id)
    clock = None if request.param == "redis" else FakeClock()
    one = open_store(url, clock=clock or FakeClock())
    two = open_store(url, clock=clock or FakeClock())
    await one.connect()
    await two.connect()
    try:
        yield Store(one, two, clock)
    finally:
        await one.close()
        await two.close()
        await module.cleanup(url)
        memory._STATES.pop(url, None)


TTL = 0.3  # short, so that Redis expires it quickly; the fake clock moves past it at once


async def test_one_owner_holds_the_lease_until_it_expires(store: Store) -> None:
    assert await store.one.acquire("a", TTL)
    assert not await store.two.acquire("b", TTL)
    assert await store.one.acquire("a", TTL)  # taking it again extends it

    lease = await store.two.leader()
    assert lease is not None
    assert lease.owner == "a"

    await store.pass_time(TTL)

    assert await store.two.leader() is None
    assert await store.two.acquire("b", TTL)
    assert not await store.one.renew("a", TTL)


async def test_only_the_holder_renews_or_releases(store: Store) -> None:
    assert await store.one.acquire("a", TTL)

    assert not await store.two.renew("b", TTL)
    await store.two.release("b")
    assert await store.one.renew("a", TTL)
    assert (await store.two.leader()).owner == "a"  # type: ignore[union-attr]

    await store.one.release("a")

    assert await store.two.leader() is None
    assert await store.two.acquire("b", TTL)


async def test_a_slot_is_claimed_once_and_never_behind_the_last(store: Store) -> None:
    assert await store.one.acquire("a", 30)

    assert await store.one.claim_slot("e", 100.0, "a")
    assert not await store.one.claim_slot("e", 100.0, "a")
    assert not await store.two.claim_slot("e", 90.0, "a")
    assert await store.one.claim_slot("other", 50.0, "a")

    states = await store.two.last_slots()
    assert set(states) == {"e", "other"}
    assert (states["e"].slot, states["e"].published, states["e"].owner) == (100.0, False, "a")


async def test_only_the_live_lease_holder_can_claim(store: Store) -> None:
    assert not await store.one.claim_slot("e", 100.0, "a")  # nobody leads

    assert await store.one.acquire("a", TTL)
    assert not await store.two.claim_slot("e", 100.0, "b")  # b does not lead
    await store.pass_time(TTL)
    assert not await store.one.claim_slot("e", 100.0, "a")  # a's lease ran out
    assert await store.two.acquire("b", 30)
    assert await store.two.claim_slot("e", 100.0, "b")


async def test_two_would_be_leaders_racing_for_one_slot_claim_it_once(store: Store) -> None:
    assert await store.one.acquire("a", 30)

    results = await asyncio.gather(*[
        (store.one if i % 2 else store.two).claim_slot("e", 100.0, "a") for i in range(20)])

    assert results.count(True) == 1


async def test_mark_published_records_only_the_current_claim(store: Store) -> None:
    assert await store.one.acquire("a", 30)
    assert await store.one.claim_slot("e", 1_700_000_000.25, "a")

    await store.two.mark_published("e", 1_700_000_000.5)
    assert not (await store.one.last_slots())["e"].published
    await store.two.mark_published("e", 1_700_000_000.25)
    state = (await store.one.last_slots())["e"]

    assert (state.slot, state.published, state.owner) == (1_700_000_000.25, True, "a")
    assert await store.one.claim_slot("e", 1_700_000_001.0, "a")
    assert not (await store.one.last_slots())["e"].published


def test_a_hub_without_results_has_no_schedule_store() -> None:
    hub = Hub("memory://no-results", results="none")
    try:
        with pytest.raises(ConfigurationError, match=r"pass results='redis://\.\.\.'"):
            open_store(hub.settings.results)
    finally:
        hub.close()


def test_the_store_is_the_one_of_the_hubs_results(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://x"), MemoryScheduleStore)
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'r.db'}"), SQLiteScheduleStore)
    redis_store = open_store("redis://127.0.0.1:6379/2?prefix=shop")
    assert isinstance(redis_store, RedisScheduleStore)
    assert redis_store.lease_key == "{shop:beat}:lease"
