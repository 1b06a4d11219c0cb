"""What the canvas refuses at send time, and a malformed canvas in a message, which the
worker dead-letters with the reason (no worker is needed for most of these)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub import ConfigurationError, Hub, chord, group
from hubbub.canvas.nodes import CanvasError, check_followups
from hubbub.codecs import get_codec
from hubbub.message import Envelope, encode
from hubbub.testing import drain
from hubbub.transports import Outgoing
from tests.canvas.conftest import App, make_app
from tests.conftest import dead_reasons


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}", lease=5)
    try:
        yield make_app(hub)
    finally:
        hub.close()


def test_a_chord_on_a_hub_without_results_is_refused_at_send(tmp_path: Path) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'h.db'}", results="none")
    try:
        app = make_app(hub)
        with pytest.raises(ConfigurationError, match="keeps no results"):
            chord([app.add.s(1, 1)], app.total.s()).delay()
        with pytest.raises(ConfigurationError, match="keeps no results"):
            (group(app.add.s(1, 1), app.add.s(2, 2)) | app.total.s()).delay()
    finally:
        hub.close()


def test_arguments_are_checked_where_the_parents_value_goes(app: App) -> None:
    with pytest.raises(TypeError, match=r"canvas\.add"):
        app.add.s(1).delay()  # first step: nothing is put before (1,)
    with pytest.raises(TypeError, match="parent's value"):
        (app.add.s(1, 1) | app.add.s(1, 2)).delay()  # would get three
    with pytest.raises(TypeError, match=r"canvas\.add"):
        app.add.si(1)  # type: ignore[call-arg]
    assert app.ledger.calls == []


def test_bad_options_and_shapes_say_the_fix(app: App) -> None:
    with pytest.raises(ConfigurationError, match="unknown signature option 'queu'"):
        app.add.s(1, 2).set(queu="x")
    with pytest.raises(ConfigurationError, match=r"priority must be 0\.\.9"):
        app.add.s(1, 2).set(priority=12)
    linked = group(app.add.s(1, 1))
    linked.link(app.total.s())
    with pytest.raises(ConfigurationError, match="takes no link callback"):
        linked.delay()
    with pytest.raises(ConfigurationError, match="at least one header"):
        chord([], app.total.s())
    with pytest.raises(ConfigurationError, match="chunk size"):
        app.add.chunks([(1, 2)], 0)


@pytest.mark.parametrize(("canvas", "where"), [
    ({"next": "x"}, "canvas.next: not a list"),
    ({"bogus": []}, "unknown field 'bogus'"),
    ({"next": [{"k": "task"}]}, "canvas.next[0].task"),
    ({"link": [{"k": "loop"}]}, "unknown kind 'loop'"),
    ({"chord": {"id": "c", "i": 3, "n": 2, "body": {}}}, "0 <= i < n"),
    ({"link": [{"k": "task", "task": "t", "id": "i", "args": [], "kwargs": {},
                "opts": {"priority": 42}, "im": False}]}, "opts.priority: out of range"),
])
def test_malformed_followups_are_named(canvas: dict[str, object], where: str) -> None:
    with pytest.raises(CanvasError, match=where.replace("[", r"\[").replace("]", r"\]")):
        check_followups(canvas)


def test_a_too_deep_canvas_is_refused_without_recursing() -> None:
    node: dict[str, object] = {"k": "group", "id": "g", "members": []}
    for _ in range(200):
        node = {"k": "group", "id": "g", "members": [node]}
    with pytest.raises(CanvasError, match="nested deeper"):
        check_followups({"link": [node]})


def test_a_message_with_a_malformed_canvas_is_dead_lettered_with_the_reason(app: App) -> None:
    envelope = Envelope("canvas.add", (1, 2), id="bad-canvas", canvas={"next": [{"k": "x"}]})
    body = encode(envelope, get_codec("json"))

    async def send() -> None:
        client = await app.hub.client()
        await client.transport.publish([Outgoing("default", body, envelope.id)])

    app.hub.bridge.run(send())
    drain(app.hub)
    assert app.ledger.calls == []
    reasons = app.hub.bridge.run(dead_reasons(app.hub))
    assert any("malformed canvas" in r and "unknown kind 'x'" in r for r in reasons.values())


def test_an_unknown_task_with_a_malformed_canvas_is_refused_for_the_canvas(app: App) -> None:
    # The canvas is checked first: a refusal that carries its envelope has its canvas
    # followed (to fail the rest of the workflow), so a malformed one must never get there.
    envelope = Envelope("canvas.missing", (), id="bad-both", canvas={"link": [{"k": "x"}]})
    body = encode(envelope, get_codec("json"))

    async def send() -> None:
        client = await app.hub.client()
        await client.transport.publish([Outgoing("default", body, envelope.id)])

    app.hub.bridge.run(send())
    drain(app.hub)
    reasons = app.hub.bridge.run(dead_reasons(app.hub))
    assert any("malformed canvas" in r and "unknown kind 'x'" in r for r in reasons.values())
