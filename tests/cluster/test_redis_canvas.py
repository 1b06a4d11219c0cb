"""Workflows on a Redis Cluster (``redis+cluster://``, 3 masters and 3 replicas started by
the session): the chord join of many chords at once, whose keys lie in different slots, and
a chord, a chain and a group end to end with a worker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.crc import key_slot

from hubbub import Hub, chain, chord, group
from hubbub.results import ResultBackend, open_results
from hubbub.results.base import ChordMember
from hubbub.testing import BackgroundWorker
from tests import brokers
from tests.cluster import servers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def cluster_url(prefix: str) -> str:
    module = brokers.load("redis_cluster")
    brokers.require(module)  # starts the session's cluster (or skips, or fails under CI)
    return servers.redis_cluster().url(prefix)


@pytest.fixture
async def store() -> AsyncIterator[ResultBackend]:
    url = cluster_url("cc" + uuid.uuid4().hex[:10])
    backend = open_results(url)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.close()
        await brokers.load("redis_cluster").cleanup(url)


def slots(chords: list[str]) -> set[int]:
    """The cluster slots of these chords' keys (as the store hash-tags them)."""
    return {key_slot(chord.encode()) for chord in chords}


async def test_joins_of_chords_in_different_slots_are_counted_in_one_call(
        store: ResultBackend) -> None:
    chords = [uuid.uuid4().hex for _ in range(8)]
    assert len(slots(chords)) > 1  # the keys lie on different slots (and masters)
    members = [ChordMember(c, f"{c}-{i}", i, i * 10) for i in range(3) for c in chords]
    joins = await store.chord_join(members, ttl=60)
    assert [j.count for j in joins] == [1] * 8 + [2] * 8 + [3] * 8
    assert all(j.added and not j.fired for j in joins)
    again = await store.chord_join(members[:8], ttl=60)  # a member that finished twice
    assert [(j.count, j.added) for j in again] == [(3, False)] * 8
    # Redis forgot the script (a restart) on every master: each join is sent again, once.
    for port in servers.redis_cluster().ports:
        servers.cli(port, "SCRIPT", "FLUSH")
    late = [ChordMember(c, f"{c}-3", 3, 30) for c in chords]
    assert [(j.count, j.added) for j in await store.chord_join(late, ttl=60)] == [(4, True)] * 8
    for c in chords:
        assert await store.chord_values(c) == [0, 10, 20, 30]
        assert await store.chord_mark(c, "fired", ttl=60)
        assert not await store.chord_mark(c, "fired", ttl=60)
    fired = await store.chord_join(members[:1], ttl=60)
    assert fired[0].fired
    await store.save_group("g1", ["a", "b"], ttl=60)
    assert await store.read_group("g1") == ["a", "b"]


@pytest.fixture
def hub() -> Iterator[Hub]:
    url = cluster_url("cw" + uuid.uuid4().hex[:10])
    h = Hub(url, results=url, lease=10)
    try:
        yield h
    finally:
        h.close()
        asyncio.run(brokers.load("redis_cluster").cleanup(url))


def test_a_chord_a_chain_and_a_group_run_end_to_end_on_a_cluster(hub: Hub) -> None:
    @hub.task(name="cc.add")
    def add(x: int, y: int) -> int:
        return x + y

    @hub.task(name="cc.total")
    def total(values: list[int]) -> int:
        return sum(values)

    with BackgroundWorker(hub):
        chords = [chord([add.s(i, i) for i in range(5)], total.s()).delay() for _ in range(4)]
        chained = chain(add.s(1, 2), add.s(10), add.s(100)).delay()
        grouped = group(add.s(i, 1) for i in range(4)).delay()
        assert [c.get(timeout=60) for c in chords] == [20] * 4
        assert chained.get(timeout=60) == 113
        assert grouped.get(timeout=60) == [1, 2, 3, 4]
