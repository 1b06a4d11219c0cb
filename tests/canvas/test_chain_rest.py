"""The rest of a chain travels as one opaque text (``then``); each hop takes its first step
off it. Only that step is parsed: the others pass on as text, checked when their turn
comes."""

from __future__ import annotations

import json

import pytest

from hubbub.canvas.nodes import CanvasError, join_rest, rest_nodes, split_rest


def step(i: int, **extra: object) -> dict[str, object]:
    return {"k": "task", "task": "inc", "id": f"id-{i}", "args": [i, "a,]}\"["],
            "kwargs": {"k": {"nested": [1, 2]}}, "opts": {}, "im": False, "next": [],
            "link": [], "err": [], **extra}


def test_each_hop_takes_the_first_step_and_passes_the_others_on_in_order() -> None:
    steps = [step(i) for i in range(5)]
    then = join_rest(steps, None)
    seen = []
    while then is not None:
        first, then = split_rest(then)
        seen.append(first)
    assert seen == steps


def test_the_rest_reads_back_as_the_same_steps() -> None:
    steps = [step(i) for i in range(3)]
    first, rest = split_rest(join_rest(steps, None) or "")
    assert first == steps[0]
    assert rest_nodes(rest) == steps[1:]


@pytest.mark.parametrize("then", [
    '[{"k": "task"}]',  # spaces: not as a sender writes it; parsed whole, then checked
    '[ {"k":"task","task":"inc"} ]',
])
def test_a_text_in_another_shape_is_still_parsed_and_checked(then: str) -> None:
    with pytest.raises(CanvasError, match=r"canvas\.then\[0\]"):
        split_rest(then)


@pytest.mark.parametrize("then", ['[{"k":"task"', '[{"a":NaN}]', "[]", "{}", "not json"])
def test_a_malformed_first_step_is_refused(then: str) -> None:
    with pytest.raises(CanvasError):
        split_rest(then)


def test_a_malformed_later_step_is_refused_when_its_turn_comes() -> None:
    then = (join_rest([step(0)], None) or "")[:-1] + ',{"k":"nope"}]'
    first, rest = split_rest(then)
    assert first == step(0)
    assert rest is not None
    with pytest.raises(CanvasError, match=r"unknown kind 'nope'"):
        split_rest(rest)


def test_steps_read_back_whole_whether_their_fields_hold_usual_values_or_not() -> None:
    plain = {"k": "task", "task": "inc", "id": "p", "args": [], "kwargs": {}, "opts": {},
             "im": False, "next": [], "link": [], "err": []}
    busy = {"k": "task", "task": "inc", "id": "b", "args": [0], "kwargs": {"x": []},
            "opts": {"queue": "q", "priority": 0}, "im": True, "next": [dict(plain, id="n")],
            "link": [dict(plain, id="l")], "err": [dict(plain, id="e")]}
    then = join_rest([plain, busy, plain], None)
    assert then is not None
    usual = join_rest([plain] * 3, None) or ""
    assert len(usual) < 2 * len(json.dumps(plain, separators=(",", ":")))  # short on the wire
    assert rest_nodes(then) == [plain, busy, plain]
    first, rest = split_rest(then)
    second, _ = split_rest(rest or "")
    assert (first, second) == (plain, busy)
