"""Limits in the result store on a Redis Cluster: batches of unique claims and slot renewals
whose keys lie in different slots (no scripts in a cluster pipeline), in order per key."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from hubbub.limits import LimitStore
from hubbub.results import open_results
from tests import brokers
from tests.cluster import servers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
async def store() -> AsyncIterator[LimitStore]:
    module = brokers.load("redis_cluster")
    brokers.require(module)  # starts the session's cluster (or skips, or fails under CI)
    url = servers.redis_cluster().url("cl" + uuid.uuid4().hex[:10])
    backend = open_results(url)
    await backend.connect()
    try:
        yield backend.limits()
    finally:
        await backend.close()
        await module.cleanup(url)


async def test_unique_claims_across_slots_are_made_in_order_in_one_call(
        store: LimitStore) -> None:
    keys = [f"order:{i}" for i in range(12)]  # spread over the cluster's slots
    holders = await store.claim_uniques([(k, f"job{i}", 60) for i, k in enumerate(keys)]
                                        + [(keys[0], "late", 60)])
    assert holders == [f"job{i}" for i in range(12)] + ["job0"]
    await store.release_unique([(k, f"job{i}") for i, k in enumerate(keys)])
    again = await store.claim_uniques([(k, "new", 60) for k in keys])
    assert again == ["new"] * 12


async def test_slots_across_keys_are_renewed_and_released_in_one_call(
        store: LimitStore) -> None:
    slots = [(f"customer:{i}", "task") for i in range(8)]
    for key, holder in slots:
        assert await store.acquire_slot(key, holder, limit=1, ttl=0.5)
    await store.renew_slots(slots, ttl=60)
    await asyncio.sleep(0.6)  # past the first ttl: only the renewal keeps them
    assert not any([await store.acquire_slot(k, "other", limit=1, ttl=60) for k, _ in slots])
    await store.release_slots(slots)
    assert all([await store.acquire_slot(k, "other", limit=1, ttl=60) for k, _ in slots])


async def test_rate_reservations_of_keys_in_different_slots_keep_their_own_budgets(
        store: LimitStore) -> None:
    keys = [f"sync:customer{i}" for i in range(6)]
    firsts = [await store.reserve(k, interval=10, horizon=1) for k in keys]
    assert all(r.granted for r in firsts)  # each key's first start, none shared
    seconds = [await store.reserve(k, interval=10, horizon=1) for k in keys]
    assert not any(r.granted for r in seconds)  # the next one of each is 10 s away
    await store.set_rate("sync", "5/s")
    assert await store.rates() == {"sync": "5/s"}
