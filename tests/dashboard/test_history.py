"""The task history every result store keeps for the dashboard: written with the records,
searchable by each filter, bound by the store rule and by retention."""

from __future__ import annotations

from pathlib import Path

from hubbub.results import ResultRecord, State, open_results
from hubbub.results.base import HistoryQuery
from hubbub.results.history import MAX_ATTEMPTS, Attempt, HistoryDetail, TaskNote
from tests.conftest import Broker, eventually


def _url(broker: Broker, tmp_path: Path) -> str:
    return broker.results_url or f"sqlite:///{tmp_path / 'results.db'}"


async def test_history_rows_follow_records_and_answer_each_filter(broker: Broker,
                                                                   tmp_path: Path) -> None:
    store = open_results(_url(broker, tmp_path))
    await store.connect()
    try:
        await store.store([ResultRecord("a1", State.STARTED, task="add", worker="w1",
                                        created_at=100.0, started_at=101.0)], ttl=60)
        await store.store([ResultRecord("a1", State.SUCCESS, task="add", worker="w1",
                                        value=3, created_at=100.0, started_at=101.0,
                                        finished_at=103.5),
                           ResultRecord("b2", State.FAILURE, task="mul", worker="w2"),
                           ResultRecord("c3", State.STARTED, task="add", worker="w2")],
                          ttl=60)
        # SUCCESS is sticky: a late STARTED changes neither the record nor its history row
        await store.store([ResultRecord("a1", State.STARTED, task="add", worker="w9")], ttl=60)

        rows = await store.search_history(HistoryQuery())
        assert {r.id for r in rows} == {"a1", "b2", "c3"}
        (a1,) = await store.search_history(HistoryQuery(id="a1"))
        assert (a1.state, a1.worker, a1.runtime, a1.wait) == (State.SUCCESS, "w1", 2.5, 1.0)
        assert {r.id for r in await store.search_history(HistoryQuery(task="add"))} == {
            "a1", "c3"}
        assert [r.id for r in await store.search_history(
            HistoryQuery(state=State.FAILURE))] == ["b2"]
        assert [r.id for r in await store.search_history(
            HistoryQuery(task="add", worker="w2"))] == ["c3"]
        assert await store.search_history(HistoryQuery(state=State.STARTED, task="mul")) == []
        assert len(await store.search_history(HistoryQuery(limit=2))) == 2
        assert await store.search_history(HistoryQuery(id="nope")) == []
    finally:
        await store.close()


async def test_history_outlives_the_results_and_prune_drops_old_rows(broker: Broker,
                                                                     tmp_path: Path) -> None:
    store = open_results(_url(broker, tmp_path))
    await store.connect()
    try:
        await store.store([ResultRecord("old", State.SUCCESS, task="t")], ttl=0.001)
        await store.store([ResultRecord("new", State.SUCCESS, task="t")], ttl=60)

        async def expired() -> bool:
            return "old" not in await store.get(["old"])

        await eventually(expired)  # the result expired ...
        rows = await store.search_history(HistoryQuery(task="t"))
        assert {r.id for r in rows} == {"old", "new"}  # ... its history row stays
        newest = max(r.updated_at for r in rows)
        await store.prune_history(newest)
        assert [r.id for r in await store.search_history(HistoryQuery(task="t"))] == ["new"]
    finally:
        await store.close()


async def test_history_turned_off_writes_no_rows_notes_attempts_or_links(
        broker: Broker, tmp_path: Path) -> None:
    off, reader = open_results(_url(broker, tmp_path)), open_results(_url(broker, tmp_path))
    off.history_ttl = None
    await off.connect()
    await reader.connect()  # history on: it would find whatever was written
    try:
        await off.store([ResultRecord("x", State.FAILURE, task="t", note=TaskNote("[]"),
                                      attempt=Attempt(1, 1.0, "w", "FAILURE"))], ttl=60)
        await off.link_retry("x", "y")
        assert "x" in await reader.get(["x"])  # the result is written all the same
        assert await reader.search_history(HistoryQuery()) == []
        assert await reader.history_detail("x") == HistoryDetail()
    finally:
        await off.close()
        await reader.close()


async def test_notes_attempts_and_retry_links_are_kept_beside_the_row(broker: Broker,
                                                                       tmp_path: Path) -> None:
    store = open_results(_url(broker, tmp_path))
    await store.connect()
    try:
        note = TaskNote('{"args":[1],"kwargs":{}}', exact=True, queue="q", parent="p0",
                        children=("c1", "c2"))
        for n in range(1, MAX_ATTEMPTS + 3):  # more attempts than are kept
            await store.store([ResultRecord("a1", State.RETRY, task="t", note=note,
                                            attempt=Attempt(n, 100.0 + n, "w1", "RETRY",
                                                            "ValueError: no", 2.0))], ttl=60)
        await store.store([ResultRecord("a1", State.FAILURE, task="t",  # no note: kept
                                        attempt=Attempt(MAX_ATTEMPTS + 3, 200.0, "w2",
                                                        "FAILURE", "ValueError: no"))], ttl=60)
        await store.link_retry("a1", "b2")

        detail = await store.history_detail("a1")
        assert detail.note == note
        assert detail.note is not None
        assert detail.note.arguments() == ([1], {})
        assert [a.number for a in detail.attempts] == list(range(4, MAX_ATTEMPTS + 4))
        assert (detail.attempts[-1].outcome, detail.attempts[-1].worker) == ("FAILURE", "w2")
        assert detail.attempts[0].delay == 2.0
        assert detail.retried_as == "b2"
        assert await store.history_detail("nope") == HistoryDetail()

        (row,) = await store.search_history(HistoryQuery(id="a1"))
        await store.prune_history(row.updated_at + 1)  # the details go with their row
        assert await store.history_detail("a1") == HistoryDetail()
    finally:
        await store.close()
