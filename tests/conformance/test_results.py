"""One body of behaviour every result backend must show, run against each that exists."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hubbub.results import ErrorInfo, ResultBackend, ResultRecord, State, open_results
from tests import brokers


def _keeps_results(name: str) -> bool:
    module = brokers.available(name)
    return module is not None and module.results_url(Path("/nonexistent"), "probe") is not None


@pytest.fixture(params=[brokers.param(n) for n in brokers.NAMES if _keeps_results(n)])
async def results(request: pytest.FixtureRequest, tmp_path: Path
                  ) -> AsyncIterator[ResultBackend]:
    """A result backend on each broker that keeps results (RabbitMQ and Beanstalkd do not)."""
    module = brokers.load(request.param)
    brokers.require(module)
    run_id = "r" + uuid.uuid4().hex[:10]
    url = module.results_url(tmp_path, run_id)
    backend = open_results(url)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.close()
        await module.cleanup(module.make_url(tmp_path, run_id))


async def test_missing_record_is_absent(results: ResultBackend) -> None:
    assert await results.get(["nope"]) == {}


async def test_stored_record_round_trips_with_value_and_error(results: ResultBackend) -> None:
    ok = ResultRecord("a", State.SUCCESS, task="t", value={"x": [1, 2]}, finished_at=1.5)
    bad = ResultRecord("b", State.FAILURE, error=ErrorInfo("ValueError", "boom", "tb"))
    await results.store([ok, bad], ttl=60)
    assert await results.get(["a", "b", "c"]) == {"a": ok, "b": bad}


async def test_sticky_states_are_never_replaced(results: ResultBackend) -> None:
    await results.store([ResultRecord("s", State.SUCCESS, value=1),
                         ResultRecord("r", State.REVOKED)], ttl=60)
    await results.store([ResultRecord("s", State.STARTED), ResultRecord("r", State.STARTED)],
                        ttl=60)
    got = await results.get(["s", "r"])
    assert (got["s"].state, got["s"].value, got["r"].state) == (State.SUCCESS, 1, State.REVOKED)


async def test_a_revoked_record_gives_way_only_to_how_a_run_ended(results: ResultBackend) -> None:
    # The task started before the revoke reached it: what it ended in is the truth.
    await results.store([ResultRecord(i, State.REVOKED) for i in "abcd"], ttl=60)
    await results.store([ResultRecord("a", State.SUCCESS, value=1),
                         ResultRecord("b", State.FAILURE, error=ErrorInfo("E", "x")),
                         ResultRecord("c", State.RETRY), ResultRecord("d", State.STARTED)],
                        ttl=60)
    got = await results.get(list("abcd"))
    assert [got[i].state for i in "abcd"] == [State.SUCCESS, State.FAILURE, State.REVOKED,
                                              State.REVOKED]


async def test_store_unless_skips_ids_in_the_given_states_and_says_which_it_stored(
    results: ResultBackend,
) -> None:
    await results.store([ResultRecord("done", State.SUCCESS, value=1),
                         ResultRecord("running", State.STARTED),
                         ResultRecord("failed", State.FAILURE)], ttl=60)
    revoke = [ResultRecord(i, State.REVOKED) for i in ("done", "running", "failed", "new")]
    stored = await results.store_unless(
        revoke, ttl=60, unless=frozenset({State.SUCCESS, State.FAILURE, State.STARTED}))
    assert sorted(stored) == ["new"]
    stored = await results.store_unless(revoke, ttl=60,
                                        unless=frozenset({State.SUCCESS, State.FAILURE}))
    assert sorted(stored) == ["new", "running"]
    got = await results.get(["done", "running", "failed", "new"])
    assert [got[i].state for i in ("done", "running", "failed", "new")] == [
        State.SUCCESS, State.REVOKED, State.FAILURE, State.REVOKED]


async def test_failure_can_be_replaced_when_a_dead_letter_runs_again(
    results: ResultBackend,
) -> None:
    await results.store([ResultRecord("f", State.FAILURE)], ttl=60)
    await results.store([ResultRecord("f", State.STARTED)], ttl=60)
    assert (await results.get(["f"]))["f"].state == State.STARTED


async def test_records_expire_after_their_ttl(results: ResultBackend) -> None:
    await results.store([ResultRecord("e", State.SUCCESS, value=1)], ttl=1)
    assert "e" in await results.get(["e"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while "e" in await results.get(["e"]):
        assert loop.time() < deadline, "record outlived its ttl"
        await asyncio.sleep(0.1)


async def test_wait_returns_when_the_record_becomes_ready(results: ResultBackend) -> None:
    await results.store([ResultRecord("w", State.STARTED)], ttl=60)
    waiting = asyncio.create_task(results.wait("w", timeout=10))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await results.store([ResultRecord("w", State.SUCCESS, value=42)], ttl=60)
    record = await asyncio.wait_for(waiting, 10)
    assert record is not None
    assert record.value == 42


async def test_wait_gives_up_after_timeout(results: ResultBackend) -> None:
    assert await results.wait("never", timeout=0.3) is None


async def test_forget_deletes(results: ResultBackend) -> None:
    await results.store([ResultRecord("g", State.SUCCESS)], ttl=60)
    await results.forget(["g"])
    assert await results.get(["g"]) == {}


async def test_an_id_with_a_lone_surrogate_is_stored_found_waited_and_forgotten(
    results: ResultBackend,
) -> None:
    odd, look_alike = "task-\udcff", "task-\\udcff"  # must not share a key
    record = ResultRecord(odd, State.SUCCESS, task="t\udcff", value="v")
    await results.store([record, ResultRecord(look_alike, State.STARTED)], ttl=60)
    got = await results.get([odd, look_alike])
    assert got[odd].id == odd
    assert got[odd].state == State.SUCCESS
    assert got[look_alike].state == State.STARTED
    waited = await results.wait(odd, timeout=5)
    assert waited is not None
    assert waited.state == State.SUCCESS
    await results.forget([odd])
    assert list(await results.get([odd, look_alike])) == [look_alike]


async def test_error_text_is_bounded_and_may_hold_lone_surrogates(results: ResultBackend) -> None:
    from hubbub.results.base import MAX_ERROR_MESSAGE, MAX_TRACEBACK

    error = ErrorInfo("E\udcff", "m" * 300_000 + "\udcff", "t" * 300_000 + "\nlast line\udcff")
    await results.store([ResultRecord("big", State.FAILURE, error=error)], ttl=60)
    stored = (await results.get(["big"]))["big"].error
    assert stored is not None
    assert len(stored.message) <= MAX_ERROR_MESSAGE
    assert "cut" in stored.message
    assert len(stored.traceback) <= MAX_TRACEBACK + 40
    assert stored.traceback.startswith("[")
    assert stored.traceback.endswith("last line\\udcff")  # the end of a traceback is kept


async def _until(check: Any, timeout: float = 5.0) -> None:
    """Poll the async ``check`` until it is true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_worker_entry_round_trips_and_is_renewed(results: ResultBackend) -> None:
    info = {"name": "w1", "lanes": [{"queues": ["a", "b"], "pool": "prefork"}], "pid": 7}
    await results.heartbeat("w1", info, ttl=60)
    await results.heartbeat("w2\udcff", {"name": "odd"}, ttl=60)
    await results.heartbeat("w1", {**info, "pid": 8}, ttl=60)
    got = await results.workers()
    assert got["w1"] == {**info, "pid": 8}
    assert set(got) == {"w1", "w2\udcff"}


async def test_a_worker_entry_expires_after_its_ttl_unless_renewed(
    results: ResultBackend,
) -> None:
    await results.heartbeat("gone", {"n": 1}, ttl=0.3)
    await results.heartbeat("kept", {"n": 2}, ttl=60)
    assert set(await results.workers()) == {"gone", "kept"}

    async def dropped() -> bool:
        return set(await results.workers()) == {"kept"}

    await _until(dropped)


async def test_a_forgotten_worker_is_gone_at_once(results: ResultBackend) -> None:
    await results.heartbeat("w", {"n": 1}, ttl=60)
    await results.forget_worker("w")
    await results.forget_worker("never-there")
    assert await results.workers() == {}
