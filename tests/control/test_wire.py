"""Events on the wire: every event type encodes to its JSON form and decodes back; foreign
data never raises."""

from __future__ import annotations

import json

import pytest

from hubbub.control.wire import TYPES, WireEvent, decode_batch, encode_batch, to_wire
from hubbub.events import (
    Event,
    LaneInfo,
    TaskAttemptFailed,
    TaskDeadLettered,
    TaskReceived,
    TaskRevoked,
    TaskSent,
    TaskStarted,
    TaskSucceeded,
    WorkerHeartbeat,
    WorkerOffline,
    WorkerOnline,
)

EVENTS: list[tuple[Event, str]] = [
    (TaskSent("i1", "shop.add", "default", "host:1", eta=5.0), "task-sent"),
    (TaskReceived("i1", "shop.add", "default", "w1"), "task-received"),
    (TaskStarted("i1", "shop.add", "default", "w1", attempt=2), "task-started"),
    (TaskSucceeded("i1", "shop.add", 0.25, "w1"), "task-succeeded"),
    (TaskAttemptFailed("i1", "shop.add", 0.5, "w1", "RuntimeError: x", True), "task-retried"),
    (TaskAttemptFailed("i1", "shop.add", 0.5, "w1", "RuntimeError: x", False), "task-failed"),
    (TaskRevoked("i1", "shop.add", "w1", "revoked"), "task-revoked"),
    (TaskDeadLettered("i1", "default", "bad body", "w1"), "task-dead-lettered"),
    (WorkerOnline("w1", ("a", "b"), "threads", 8, (LaneInfo(("a", "b"), "threads", 8),)),
     "worker-online"),
    (WorkerHeartbeat("w1", 3, 10), "worker-heartbeat"),
    (WorkerOffline("w1", 10), "worker-offline"),
]


def test_every_event_type_has_a_wire_form_that_decodes_back() -> None:
    assert sorted(kind for _, kind in EVENTS) == sorted(TYPES)
    decoded = decode_batch(encode_batch((100.0 + i, e) for i, (e, _) in enumerate(EVENTS)))
    assert [d.type for d in decoded] == [kind for _, kind in EVENTS]
    assert [d.state for d in decoded] == [TYPES[kind] for _, kind in EVENTS]
    assert [d.timestamp for d in decoded] == [100.0 + i for i in range(len(EVENTS))]
    by_type = {d.type: d for d in decoded}
    succeeded = by_type["task-succeeded"]
    assert (succeeded.id, succeeded.task, succeeded.worker, succeeded.runtime) == (
        "i1", "shop.add", "w1", 0.25)
    assert by_type["task-retried"].data["will_retry"] is True
    assert by_type["task-failed"].error == "RuntimeError: x"
    assert by_type["task-started"].data["attempt"] == 2
    assert by_type["task-sent"].data["sender"] == "host:1"
    assert by_type["worker-online"].data["queues"] == ["a", "b"]
    assert by_type["worker-heartbeat"].data["running"] == 3
    # What --json prints is plain JSON with the same fields.
    assert json.loads(json.dumps(succeeded.to_json()))["runtime"] == 0.25


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[]", b"null", b'{"events": 3}', b'{"v": 1}', b"\xff\xfe",
    b"[" * 100_000, json.dumps({"events": [1, "x", None, {"no": "type"}]}).encode(),
    json.dumps({"events": [["task-started", 1.0], ["nope", 1, 2], [1, 2], [],
                           ["task-succeeded", "x", "i", "t", "w", 0.1, "extra"]]}).encode(),
])
def test_foreign_bodies_give_no_events_and_never_raise(body: bytes) -> None:
    assert decode_batch(body) == []


def test_a_field_of_the_wrong_type_is_left_out() -> None:
    body = json.dumps({"events": [{
        "type": "task-succeeded", "timestamp": "yesterday", "runtime": [1], "worker": 7,
        "running": 1.5, "will_retry": "yes", "queues": ["a", 1], "id": "x" * 5000,
    }]}).encode()
    [event] = decode_batch(body)
    assert event == WireEvent("task-succeeded", 0.0, id=event.id)
    assert event.runtime is None
    assert event.worker == ""
    assert "running" not in event.data
    assert "will_retry" not in event.data
    assert event.data["queues"] == ["a"]
    assert len(event.id) < 2100  # cut


def test_the_text_of_an_error_is_cut_on_the_wire() -> None:
    wire = to_wire(TaskAttemptFailed("i", "t", 0.0, "w", "e" * 100_000, False), 1.0)
    assert len(wire["error"]) < 2100
