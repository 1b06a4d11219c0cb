"""A workflow step that the worker refuses at admission (dead-lettered before it runs) fails
the rest of its workflow, as a step that failed for good does: on SQLite, Redis and RabbitMQ.
"""

from __future__ import annotations

import time

import pytest

from hubbub import Hub, TaskFailed, chord
from hubbub.canvas.nodes import UPSTREAM_FAILED
from hubbub.testing import drain
from tests.canvas.conftest import App
from tests.conftest import dead_reasons


def test_a_chain_step_naming_an_unknown_task_fails_the_rest_at_once(app: App) -> None:
    missing = app.hub.signature("canvas.missing")  # registered nowhere: the sender allows it
    result = (app.add.s(1, 1) | missing | app.add.s(1) | app.add.s(2)).apply_async(
        link_error=app.errback.s())
    drain(app.hub)
    assert result.parent is not None
    refused = result.parent.parent
    assert refused is not None
    started = time.monotonic()
    with pytest.raises(TaskFailed) as caught:
        result.get(timeout=5)
    assert time.monotonic() - started < 2  # recorded by the drain, not waited out
    assert caught.value.type == UPSTREAM_FAILED
    assert f"canvas.missing[{refused.id}]" in caught.value.message
    assert "unknown task 'canvas.missing'" in caught.value.message
    with pytest.raises(TaskFailed, match=r"unknown task 'canvas\.missing'"):
        result.parent.get(timeout=5)
    with pytest.raises(TaskFailed, match=r"unknown task 'canvas\.missing'"):
        refused.get(timeout=5)
    assert app.ledger.ran("add") == [(1, 1)]
    assert app.ledger.ran("errback") == [(refused.id,)]
    reasons = app.hub.bridge.run(dead_reasons(app.hub))
    assert any("unknown task 'canvas.missing'" in r for r in reasons.values())


def test_a_chord_header_member_whose_arguments_do_not_bind_fails_the_chord(app: App) -> None:
    # A producer without the tasks' code sends by name, unchecked; the worker checks.
    settings = app.hub.settings
    sender = Hub(settings.broker, results=settings.results, lease=5)
    try:
        header = [sender.signature("canvas.add", [1, 1]),
                  sender.signature("canvas.add", [1, 2, 3]),
                  sender.signature("canvas.add", [2, 2])]
        c = chord(header, sender.signature("canvas.total"))
        result = c.apply_async(
            link_error=sender.signature("canvas.errback", ["chord failed"], immutable=True))
        drain(app.hub)
        with pytest.raises(TaskFailed) as caught:
            result.get(timeout=5)
    finally:
        sender.close()
    assert caught.value.type == UPSTREAM_FAILED
    assert "bad arguments for task 'canvas.add'" in caught.value.message
    assert app.ledger.ran("total") == []
    assert app.ledger.ran("errback") == [("chord failed",)]
    assert sorted(app.ledger.ran("add")) == [(1, 1), (2, 2)]
    reasons = app.hub.bridge.run(dead_reasons(app.hub))
    assert any("bad arguments for task 'canvas.add'" in r for r in reasons.values())
