"""One body of behaviour every limit store shows (memory, SQLite, Redis): unique keys, rate
reservations and concurrency slots, each step atomic across callers."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hubbub.limits import LimitStore
from hubbub.results import ResultBackend, open_results
from tests import brokers
from tests.conftest import eventually

STORES = ["memory", "sqlite", "redis"]


@pytest.fixture(params=[pytest.param(n, id=n) for n in STORES])
async def backend(request: pytest.FixtureRequest, tmp_path: Path
                  ) -> AsyncIterator[ResultBackend]:
    module = brokers.load(request.param)
    brokers.require(module)
    run_id = "l" + uuid.uuid4().hex[:10]
    url = module.results_url(tmp_path, run_id)
    results = open_results(url)
    await results.connect()
    try:
        yield results
    finally:
        await results.close()
        await module.cleanup(module.make_url(tmp_path, run_id))


@pytest.fixture
def store(backend: ResultBackend) -> LimitStore:
    return backend.limits()


# -- unique keys --------------------------------------------------------------------------


async def test_a_unique_key_belongs_to_its_first_claimer_until_released(
        store: LimitStore) -> None:
    assert await store.claim_unique("order:42", "a", ttl=60) == "a"
    assert await store.claim_unique("order:42", "b", ttl=60) == "a"
    assert await store.claim_unique("order:43", "c", ttl=60) == "c"
    await store.release_unique([("order:42", "a")])
    assert await store.claim_unique("order:42", "b", ttl=60) == "b"


async def test_a_release_by_another_job_leaves_the_key_to_its_owner(store: LimitStore) -> None:
    assert await store.claim_unique("k", "owner", ttl=60) == "owner"
    await store.release_unique([("k", "someone-else")])
    assert await store.claim_unique("k", "new", ttl=60) == "owner"


async def test_a_unique_key_frees_itself_after_its_ttl(store: LimitStore) -> None:
    assert await store.claim_unique("k", "a", ttl=0.2) == "a"
    assert await store.claim_unique("k", "b", ttl=60) == "a"

    async def freed() -> bool:
        return await store.claim_unique("k", "b", ttl=60) == "b"

    await eventually(freed, timeout=5)


async def test_claims_in_one_batch_are_made_in_order(store: LimitStore) -> None:
    await store.claim_unique("held", "old", ttl=60)
    holders = await store.claim_uniques([("a", "1", 60), ("b", "2", 60), ("a", "3", 60),
                                         ("held", "4", 60)])
    assert holders == ["1", "2", "1", "old"]
    assert await store.claim_uniques([]) == []


async def test_concurrent_claims_of_one_key_have_one_winner(backend: ResultBackend) -> None:
    stores = [backend.limits() for _ in range(20)]
    owners = await asyncio.gather(*(s.claim_unique("race", f"id{i}", ttl=60)
                                    for i, s in enumerate(stores)))
    assert len(set(owners)) == 1
    assert owners[0] in {f"id{i}" for i in range(20)}


# -- rates --------------------------------------------------------------------------------


async def test_reservations_are_one_interval_apart_and_stop_at_the_horizon(
        store: LimitStore) -> None:
    asked = time.time()
    answers = [await store.reserve("t", interval=0.1, horizon=0.35) for _ in range(6)]
    granted = [a for a in answers if a.granted]
    assert len(granted) == 4  # now, +0.1, +0.2, +0.3; +0.4 is beyond the horizon
    starts = [a.at for a in granted]
    assert abs(starts[0] - asked) < 1.0  # the store's clock (Redis's for Redis) agrees
    for before, after in itertools.pairwise(starts):
        assert after - before == pytest.approx(0.1, abs=1e-5)  # Redis keeps microseconds
    refused = answers[4]
    assert not refused.granted
    assert refused.at == pytest.approx(starts[-1] + 0.1 - 0.35, abs=1e-5)


async def test_rates_of_different_keys_do_not_share_starts(store: LimitStore) -> None:
    a = await store.reserve("a", interval=10, horizon=1)
    b = await store.reserve("b", interval=10, horizon=1)
    again = await store.reserve("a", interval=10, horizon=1)
    assert a.granted
    assert b.granted
    assert not again.granted


async def test_concurrent_reservations_never_share_a_start(backend: ResultBackend) -> None:
    stores = [backend.limits() for _ in range(10)]
    answers = await asyncio.gather(*(s.reserve("r", interval=1.0, horizon=0.5) for s in stores))
    assert sum(a.granted for a in answers) == 1


async def test_a_rate_set_at_runtime_is_read_back_and_can_be_cleared(
        store: LimitStore) -> None:
    assert await store.rates() == {}
    await store.set_rate("shop.charge", "10/s")
    await store.set_rate("shop.mail", "1/m")
    assert await store.rates() == {"shop.charge": "10/s", "shop.mail": "1/m"}
    await store.set_rate("shop.charge", None)
    assert await store.rates() == {"shop.mail": "1/m"}


# -- concurrency slots --------------------------------------------------------------------


async def test_at_most_limit_holders_and_a_holder_keeps_its_slot(store: LimitStore) -> None:
    assert await store.acquire_slot("k", "a", limit=2, ttl=60)
    assert await store.acquire_slot("k", "b", limit=2, ttl=60)
    assert not await store.acquire_slot("k", "c", limit=2, ttl=60)
    assert await store.acquire_slot("k", "a", limit=2, ttl=60)  # asks again: still its
    assert await store.acquire_slot("other", "c", limit=2, ttl=60)
    await store.release_slots([("k", "a")])
    assert await store.acquire_slot("k", "c", limit=2, ttl=60)


async def test_a_slot_not_renewed_frees_itself_and_a_renewed_one_does_not(
        store: LimitStore) -> None:
    assert await store.acquire_slot("k", "kept", limit=2, ttl=0.6)
    assert await store.acquire_slot("k", "dies", limit=2, ttl=0.6)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.5
    while loop.time() < deadline:  # renew one of the two, as a live worker does
        await store.renew_slots([("k", "kept")], ttl=0.6)
        await asyncio.sleep(0.1)
    assert await store.acquire_slot("k", "new", limit=2, ttl=60)
    assert not await store.acquire_slot("k", "late", limit=2, ttl=60)  # kept + new


async def test_an_expired_slot_is_not_revived_by_a_renewal(store: LimitStore) -> None:
    assert await store.acquire_slot("k", "a", limit=1, ttl=0.1)

    async def free() -> bool:
        return await store.acquire_slot("k", "b", limit=1, ttl=60)

    await eventually(free, timeout=5)
    await store.renew_slots([("k", "a")], ttl=60)
    await store.release_slots([("k", "b")])
    assert await store.acquire_slot("k", "c", limit=1, ttl=60)


async def test_concurrent_acquires_never_exceed_the_limit(backend: ResultBackend) -> None:
    stores = [backend.limits() for _ in range(20)]
    took = await asyncio.gather(*(s.acquire_slot("race", f"h{i}", limit=3, ttl=60)
                                  for i, s in enumerate(stores)))
    assert sum(took) == 3


async def test_the_first_start_is_reserved_no_sooner_than_the_lead(store: LimitStore) -> None:
    asked = time.time()
    answer = await store.reserve("lead", interval=1.0, horizon=0.5, lead=0.2)
    assert answer.granted
    assert answer.at - asked >= 0.2 - 0.05  # the store's clock may differ a little (Redis)
