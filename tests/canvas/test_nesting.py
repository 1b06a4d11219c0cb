"""Nested canvases: a group followed by a task is a chord, groups of chains, chords in
chains, chords of chords; and sending a canvas from its plain data."""

from __future__ import annotations

from hubbub import GroupResult, chain, chord, group
from hubbub.testing import drain
from tests.canvas.conftest import App


def test_a_group_followed_by_a_task_in_a_chain_is_a_chord(app: App) -> None:
    result = chain(app.add.s(1, 1), group(app.add.s(10), app.add.s(20)), app.total.s()).delay()
    drain(app.hub)
    assert result.get(timeout=10) == 12 + 22
    assert app.ledger.ran("total") == [([12, 22],)]


def test_a_group_of_chains_returns_each_chains_last_value(app: App) -> None:
    result = group(app.add.s(i, 0) | app.add.s(100) for i in range(4)).delay()
    drain(app.hub)
    assert result.get(timeout=10) == [100, 101, 102, 103]
    assert all(r.parent is not None for r in result)


def test_a_chord_inside_a_chain_runs_between_its_neighbours(app: App) -> None:
    inner = chord([app.add.s(1), app.add.s(2)], app.total.s())
    result = (app.add.s(0, 1) | inner | app.add.s(1000)).delay()
    drain(app.hub)
    assert result.get(timeout=10) == (2 + 3) + 1000
    assert app.ledger.ran("add")[0] == (0, 1)


def test_a_chord_whose_header_members_are_chains_and_chords(app: App) -> None:
    header = [app.add.s(1, 1) | app.add.s(1),
              chord([app.add.s(2, 2), app.add.s(3, 3)], app.total.s()),
              app.add.s(5, 5)]
    result = chord(header, app.total.s()).delay()
    drain(app.hub)
    assert result.get(timeout=10) == 3 + 10 + 10


def test_a_chain_ending_in_a_group_returns_a_group_result(app: App) -> None:
    result = (app.add.s(1, 2) | group(app.add.s(1), app.add.s(2))).delay()
    drain(app.hub)
    assert isinstance(result, GroupResult)
    assert result.get(timeout=10) == [4, 5]
    assert result.parent is not None
    assert result.parent.get(timeout=10) == 3


def test_a_canvas_round_trips_through_plain_data_and_runs(app: App) -> None:
    original = chain(app.add.s(1, 2).set(priority=5), group(app.add.s(1), app.add.s(2)),
                     app.total.s())
    original.link_error(app.errback.s())
    data = original.to_dict()
    import json

    rebuilt = app.hub.signature(json.loads(json.dumps(data)))
    assert rebuilt.to_dict() == data
    result = rebuilt.delay()
    drain(app.hub)
    assert result.get(timeout=10) == 4 + 5
