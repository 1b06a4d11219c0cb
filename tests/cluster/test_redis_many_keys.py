"""Calls of many keys at once on a Redis Cluster (``redis+cluster://``): scripts cannot go in
a cluster pipeline, so each key's call goes on its own; a batch of thousands of keys must not
open more connections than the client's pool holds (redis-py's MaxConnectionsError)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from hubbub.results import ResultBackend, open_results
from hubbub.results.base import ResultRecord, State
from tests import brokers
from tests.cluster import servers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
async def store() -> AsyncIterator[ResultBackend]:
    module = brokers.load("redis_cluster")
    brokers.require(module)  # starts the session's cluster (or skips, or fails under CI)
    url = servers.redis_cluster().url("mk" + uuid.uuid4().hex[:10])
    backend = open_results(url)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.close()
        await module.cleanup(url)


async def test_thousands_of_records_are_stored_and_read_in_one_call(
        store: ResultBackend) -> None:
    records = [ResultRecord(f"r{i}", State.SUCCESS, value=i) for i in range(2500)]
    await store.store(records, ttl=60)
    got = await store.get([r.id for r in records])
    assert {i: r.value for i, r in got.items()} == {r.id: r.value for r in records}


async def test_a_small_pool_bounds_the_calls_in_flight() -> None:
    module = brokers.load("redis_cluster")
    brokers.require(module)
    url = servers.redis_cluster().url("mk" + uuid.uuid4().hex[:10], max_connections="4")
    backend = open_results(url)
    await backend.connect()
    try:
        records = [ResultRecord(f"s{i}", State.SUCCESS, value=i) for i in range(300)]
        await backend.store(records, ttl=60)
        assert len(await backend.get([r.id for r in records])) == 300
    finally:
        await backend.close()
        await module.cleanup(url)


async def test_thousands_of_records_are_stored_unless_already_final_in_one_call(
        store: ResultBackend) -> None:
    first = [ResultRecord(f"u{i}", State.SUCCESS, value=i) for i in range(0, 2400, 2)]
    await store.store(first, ttl=60)
    late = [ResultRecord(f"u{i}", State.FAILURE) for i in range(2400)]
    stored = await store.store_unless(late, ttl=60, unless=frozenset({State.SUCCESS}))
    assert sorted(stored) == sorted(f"u{i}" for i in range(1, 2400, 2))
