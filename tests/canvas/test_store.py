"""The result store's canvas operations on every store: the chord join counts distinct ids
atomically, keeps values in header order; flags are set once; group members are kept."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hubbub.results import ResultBackend, open_results
from hubbub.results.base import ChordMember
from tests import brokers

STORES = ["memory", "sqlite", "redis"]


@pytest.fixture(params=[pytest.param(n, id=n) for n in STORES if brokers.available(n)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResultBackend]:
    module = brokers.load(request.param)
    brokers.require(module)
    run_id = "cs" + uuid.uuid4().hex[:10]
    url = module.results_url(tmp_path, run_id)
    backend = open_results(url)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.close()
        await module.cleanup(module.make_url(tmp_path, run_id))


async def test_a_member_that_finishes_twice_is_counted_once(store: ResultBackend) -> None:
    chord = uuid.uuid4().hex
    first = await store.chord_join([ChordMember(chord, "a", 0, 1)], ttl=60)
    again = await store.chord_join([ChordMember(chord, "a", 0, 99)], ttl=60)
    second = await store.chord_join([ChordMember(chord, "b", 1, 2)], ttl=60)
    assert [(j.count, j.added) for j in first + again + second] == [(1, True), (1, False),
                                                                     (2, True)]
    assert await store.chord_values(chord) == [1, 2]  # the first value of "a" is kept


async def test_values_come_back_in_header_order_with_their_types(store: ResultBackend) -> None:
    chord = uuid.uuid4().hex
    when = datetime(2024, 1, 2, tzinfo=UTC)
    members = [ChordMember(chord, f"m{i}", i, {"i": i, "at": when}) for i in (3, 0, 2, 1)]
    joins = await store.chord_join(members, ttl=60)
    assert [j.count for j in joins] == [1, 2, 3, 4]
    assert await store.chord_values(chord) == [{"i": i, "at": when} for i in range(4)]


async def test_concurrent_joins_see_every_count_once(store: ResultBackend) -> None:
    chord = uuid.uuid4().hex
    joins = await asyncio.gather(*(store.chord_join([ChordMember(chord, f"m{i}", i, i)],
                                                    ttl=60) for i in range(50)))
    assert sorted(j[0].count for j in joins) == list(range(1, 51))


async def test_a_flag_is_set_once_and_seen_by_later_joins(store: ResultBackend) -> None:
    chord = uuid.uuid4().hex
    [before] = await store.chord_join([ChordMember(chord, "a", 0, 1)], ttl=60)
    assert await store.chord_mark(chord, "fired", ttl=60)
    assert not await store.chord_mark(chord, "fired", ttl=60)
    assert await store.chord_mark(chord, "failed", ttl=60)
    [after] = await store.chord_join([ChordMember(chord, "a", 0, 1)], ttl=60)
    assert (before.fired, after.fired) == (False, True)


async def test_group_members_are_kept_in_order(store: ResultBackend) -> None:
    group = uuid.uuid4().hex
    assert await store.read_group(group) is None
    await store.save_group(group, ["c", "a", "b"], ttl=60)
    assert await store.read_group(group) == ["c", "a", "b"]
