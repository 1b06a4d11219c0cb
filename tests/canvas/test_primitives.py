"""Every canvas primitive, run by a real worker on SQLite, Redis and RabbitMQ."""

from __future__ import annotations

import pytest

from hubbub import GroupResult, State, TaskFailed, chain, chord, group
from hubbub.canvas.nodes import UPSTREAM_FAILED
from hubbub.testing import drain
from tests.canvas.conftest import App, finish


def test_a_chain_passes_each_value_on_and_links_its_results_back(app: App) -> None:
    result = (app.add.s(1, 2) | app.add.s(10) | app.add.s(100)).delay()
    drain(app.hub)
    assert result.get(timeout=10) == 113
    assert result.parent is not None
    assert result.parent.get(timeout=10) == 13
    first = result.parent.parent
    assert first is not None
    assert first.get(timeout=10) == 3
    assert first.parent is None
    assert app.ledger.ran("add") == [(1, 2), (3, 10), (13, 100)]


def test_chain_function_equals_the_pipe_and_partial_args_go_first(app: App) -> None:
    result = chain(app.add.s(5), app.add.s(1)).delay(2)
    drain(app.hub)
    assert result.get(timeout=10) == 8


def test_an_immutable_step_ignores_the_parents_value(app: App) -> None:
    result = (app.add.s(1, 1) | app.add.si(5, 5)).delay()
    drain(app.hub)
    assert result.get(timeout=10) == 10
    assert app.ledger.ran("add") == [(1, 1), (5, 5)]


def test_a_group_is_sent_at_once_and_read_in_order(app: App) -> None:
    result = group(app.add.s(i, i) for i in range(20)).delay()
    assert isinstance(result, GroupResult)
    assert len(result) == 20
    assert result.completed_count() == 0
    assert not result.ready()
    drain(app.hub)
    assert result.get(timeout=10) == [2 * i for i in range(20)]
    assert result.completed_count() == 20
    assert result.ready()
    assert result.successful()
    assert not result.failed()
    restored = GroupResult.restore(app.hub, result.id)
    assert [r.id for r in restored] == [r.id for r in result]
    assert restored.get(timeout=10) == [2 * i for i in range(20)]


def test_a_group_with_a_failed_member_reports_it(app: App) -> None:
    result = group(app.add.s(1, 1), app.boom.s(2), app.add.s(3, 3)).delay()
    drain(app.hub)
    assert result.ready()
    assert result.failed()
    assert not result.successful()
    assert result.completed_count() == 2
    with pytest.raises(ValueError, match="boom on 2"):
        result.get(timeout=10)
    values = result.get(timeout=10, propagate=False)
    assert values[0] == 2
    assert values[2] == 6
    assert isinstance(values[1], TaskFailed)


def test_a_revoked_group_never_runs(app: App) -> None:
    result = group(app.add.s(i, 0) for i in range(3)).delay()
    assert sorted(result.revoke()) == sorted(r.id for r in result)
    drain(app.hub)
    assert app.ledger.ran("add") == []
    assert all(r.state == State.REVOKED for r in result)


def test_a_chord_body_gets_every_header_value_in_order(app: App) -> None:
    result = chord([app.add.s(i, 1) for i in range(30)], app.total.s()).delay()
    drain(app.hub)
    assert result.get(timeout=10) == sum(range(1, 31))
    assert app.ledger.ran("total") == [(list(range(1, 31)),)]
    header = result.parent
    assert isinstance(header, GroupResult)
    assert header.get(timeout=10) == list(range(1, 31))


def test_a_failed_step_stops_the_chain_says_why_and_calls_link_error(app: App) -> None:
    result = (app.add.s(1, 1) | app.boom.s() | app.add.s(1) | app.add.s(2)).apply_async(
        link_error=app.errback.s())
    drain(app.hub)
    with pytest.raises(TaskFailed) as caught:
        result.get(timeout=10)
    assert caught.value.type == UPSTREAM_FAILED
    assert "boom on 2" in caught.value.message
    assert result.parent is not None
    assert result.parent.state == State.FAILURE
    failed = result.parent.parent
    assert failed is not None
    with pytest.raises(ValueError, match="boom on 2"):
        failed.get(timeout=10)
    assert app.ledger.ran("add") == [(1, 1)]
    assert app.ledger.ran("errback") == [(failed.id,)]


def test_a_failed_header_task_fails_the_chord_and_runs_its_errback_once(app: App) -> None:
    body = app.total.s()
    c = chord([app.add.s(1, 1), app.boom.s(1), app.boom.s(2), app.add.s(2, 2)], body)
    result = c.apply_async(link_error=app.errback.si("chord failed"))
    drain(app.hub)
    with pytest.raises(TaskFailed) as caught:
        result.get(timeout=10)
    assert caught.value.type == UPSTREAM_FAILED
    assert app.ledger.ran("total") == []
    assert app.ledger.ran("errback") == [("chord failed",)]


def test_a_link_callback_gets_the_value_and_the_result_is_the_tasks(app: App) -> None:
    result = app.add.s(2, 3).apply_async(link=app.echo.s("after"))
    drain(app.hub)
    assert result.get(timeout=10) == 5
    assert app.ledger.ran("echo") == [(5, "after")]


def test_a_step_that_retries_keeps_the_chain_going(app: App) -> None:
    result = (app.flaky.s(4) | app.add.s(1)).delay()
    finish(app.hub, result)
    assert result.get(timeout=10) == 41
    assert app.ledger.ran("flaky") == [(4,), (4,)]


def test_map_starmap_and_chunks_run_many_calls_per_message(app: App) -> None:
    mapped = app.total.map([[1, 2], [3]]).delay()
    starred = app.add.starmap([(1, 2), (3, 4)]).delay()
    chunks = app.add.chunks([(i, i) for i in range(7)], 3).delay()
    drain(app.hub)
    assert mapped.get(timeout=10) == [3, 3]
    assert starred.get(timeout=10) == [3, 7]
    assert chunks.get(timeout=10) == [[0, 2, 4], [6, 8, 10], [12]]


def test_a_revoked_step_stops_the_chain_and_says_so(app: App) -> None:
    result = (app.add.s(1, 1) | app.add.s(2) | app.add.s(3)).delay()
    middle = result.parent
    assert middle is not None
    assert middle.revoke()
    drain(app.hub)
    assert middle.state == State.REVOKED
    with pytest.raises(TaskFailed) as caught:
        result.get(timeout=10)
    assert caught.value.type == UPSTREAM_FAILED
    assert "revoked before it ran" in caught.value.message
    assert app.ledger.ran("add") == [(1, 1)]


def test_task_apply_async_takes_callbacks_and_send_options(app: App) -> None:
    ok = app.add.apply_async((2, 3), link=app.echo.s("after"), queue="default", priority=3)
    bad = app.boom.apply_async((7,), link=app.echo.s("never"), link_error=app.errback.s())
    drain(app.hub)
    assert ok.get(timeout=10) == 5
    with pytest.raises(ValueError, match="boom on 7"):
        bad.get(timeout=10)
    assert app.ledger.ran("echo") == [(5, "after")]
    assert app.ledger.ran("errback") == [(bad.id,)]
