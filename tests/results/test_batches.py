"""A worker's flush stores many records at once, sometimes two of one id (a fast task's
STARTED and SUCCESS): every result store applies them in order, and reads many at once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hubbub.results import ResultBackend, ResultRecord, State, open_results
from hubbub.results.base import HistoryQuery
from hubbub.results.history import Attempt, TaskNote
from hubbub.results.redis import RedisResults
from tests import brokers


def _keeps_results(name: str) -> bool:
    module = brokers.available(name)
    return module is not None and module.results_url(Path("/nonexistent"), "probe") is not None


@pytest.fixture(params=[brokers.param(n) for n in brokers.NAMES if _keeps_results(n)])
async def results(request: pytest.FixtureRequest, tmp_path: Path
                  ) -> AsyncIterator[ResultBackend]:
    module = brokers.load(request.param)
    brokers.require(module)
    run_id = "b" + uuid.uuid4().hex[:10]
    backend = open_results(module.results_url(tmp_path, run_id))
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.close()
        await module.cleanup(module.make_url(tmp_path, run_id))


async def test_two_records_of_one_id_in_one_batch_apply_in_order(
        results: ResultBackend) -> None:
    started = ResultRecord("t1", State.STARTED, task="noop", worker="w", started_at=1.0,
                           note=TaskNote("[1]", queue="q"),
                           attempt=Attempt(1, 1.0, "w", "STARTED"))
    done = ResultRecord("t1", State.SUCCESS, task="noop", worker="w", value=7, started_at=1.0,
                        finished_at=2.0, attempt=Attempt(1, 1.0, "w", "SUCCESS"))
    await results.store([started, done], ttl=60)
    assert (await results.get(["t1"]))["t1"].value == 7
    [row] = await results.search_history(HistoryQuery(id="t1"))
    assert row.state == State.SUCCESS
    assert await results.search_history(HistoryQuery(state=State.STARTED)) == []
    assert [r.id for r in await results.search_history(HistoryQuery(state=State.SUCCESS))
            ] == ["t1"]
    detail = await results.history_detail("t1")
    assert detail.note == TaskNote("[1]", queue="q")  # from the first record: kept
    assert [a.outcome for a in detail.attempts] == ["SUCCESS"]


async def test_a_sticky_state_earlier_in_the_batch_holds_against_a_later_record(
        results: ResultBackend) -> None:
    written = await results.store_unless(
        [ResultRecord("t2", State.SUCCESS, value=1), ResultRecord("t2", State.STARTED)],
        ttl=60, unless=frozenset())
    assert written == ["t2"]
    assert (await results.get(["t2"]))["t2"].state == State.SUCCESS
    [row] = await results.search_history(HistoryQuery(id="t2"))  # not the refused record's
    assert row.state == State.SUCCESS


async def test_thousands_of_records_are_stored_and_read_in_one_call_each(
        results: ResultBackend) -> None:
    ids = [f"m{i}" for i in range(2500)]  # more than one read call holds on Redis
    records = [ResultRecord(i, State.SUCCESS, value=n) for n, i in enumerate(ids)]
    stored = []
    for start in range(0, 2500, 250):  # a flush; a cluster sends a call per record at once
        stored += await results.store_unless(records[start:start + 250], ttl=60,
                                             unless=frozenset())
    assert stored == ids
    found = await results.get([*ids, "absent"])
    assert [found[i].value for i in ids] == list(range(2500))
    assert "absent" not in found


async def test_the_attempt_that_ended_in_success_reads_back_whole(
        results: ResultBackend) -> None:
    # The SQLite store makes it again from the history row instead of writing it.
    retry = Attempt(1, 10.0, "w1", "RETRY", "ValueError: no", 2.0)
    success = Attempt(2, 20.0, "w2", "SUCCESS")
    await results.store([ResultRecord("t3", State.RETRY, task="t", worker="w1",
                                      finished_at=10.0, attempt=retry)], ttl=60)
    await results.store([ResultRecord("t3", State.SUCCESS, task="t", worker="w2", retries=1,
                                      value=1, started_at=19.0, finished_at=20.0,
                                      attempt=success)], ttl=60)
    assert (await results.history_detail("t3")).attempts == [retry, success]
    odd = Attempt(1, 30.0, "w3", "SUCCESS")  # ended at another instant than the record says
    await results.store([ResultRecord("t4", State.SUCCESS, task="t", worker="w3", value=1,
                                      finished_at=31.0, attempt=odd)], ttl=60)
    assert (await results.history_detail("t4")).attempts == [odd]


async def test_a_first_run_success_attempt_reads_back_from_its_row(
        results: ResultBackend) -> None:
    # The common case: neither SQLite nor Redis writes this attempt; both make it again.
    success = Attempt(1, 20.0, "w", "SUCCESS")
    await results.store([ResultRecord("t5", State.SUCCESS, task="t", worker="w", value=1,
                                      started_at=19.0, finished_at=20.0, attempt=success,
                                      note=TaskNote("[5]", queue="q"))], ttl=60)
    detail = await results.history_detail("t5")
    assert detail.attempts == [success]
    assert detail.note == TaskNote("[5]", queue="q")
    if isinstance(results, RedisResults):  # no attempts key of its own
        client = results._client
        assert not await client.exists(results._history._detail_key("attempts", "t5"))
