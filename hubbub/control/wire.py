"""Events on the wire: every :mod:`hubbub.events` event as a flat JSON object.

One plane message on the ``events`` channel carries a batch:
``{"v": 1, "events": [{...}, ...]}``. The three events every task makes (received, started,
succeeded) travel as arrays, ``[type, timestamp, *fields]`` in a fixed order (see
``_ARRAY_FIELDS``), to keep a busy worker's cost down; :func:`decode_batch` gives every
event in the object form. Each event has a ``type`` (``task-succeeded``), a
``timestamp`` (epoch seconds when it happened) and the fields that apply to it: ``worker``,
``id``, ``task``, ``queue``, ``state``, ``runtime``, ``error``, ``will_retry``,
``attempt``, ``eta``, ``sender``, ``reason``, ``running``, ``processed``, ``queues``,
``pool``, ``concurrency``. ``state`` is the task's result state where it has one
(``SUCCESS``, ``FAILURE``, ``RETRY``, ``REVOKED``, ``STARTED``), else a word for the step
(``SENT``, ``RECEIVED``, ``DEAD``, ``ONLINE``, ``HEARTBEAT``, ``OFFLINE``).

Anyone who can write to the broker can write to the channel, so :func:`decode_batch`
never raises: a body that is not such a batch gives no events, and a field of the wrong
type is left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from hubbub.codecs import json_dumps, json_loads
from hubbub.events import (
    Event,
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

__all__ = ["TYPES", "VERSION", "Row", "WireEvent", "decode_batch", "encode_batch",
           "received_row", "started_row", "to_wire"]

VERSION = 1
MAX_TEXT = 2000  # characters of an error or reason carried on the wire

# type -> state, for every event type hubbub sends
TYPES: dict[str, str] = {
    "task-sent": "SENT", "task-received": "RECEIVED", "task-started": "STARTED",
    "task-succeeded": "SUCCESS", "task-failed": "FAILURE", "task-retried": "RETRY",
    "task-revoked": "REVOKED", "task-dead-lettered": "DEAD", "worker-online": "ONLINE",
    "worker-heartbeat": "HEARTBEAT", "worker-offline": "OFFLINE",
}

_TEXT = ("type", "worker", "id", "task", "queue", "state", "error", "sender", "reason",
         "pool", "host")
_NUMBER = ("timestamp", "runtime", "eta")
_INT = ("attempt", "running", "processed", "concurrency")


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def to_wire(event: Event, timestamp: float) -> dict[str, Any]:
    """``event`` as the JSON object sent for it, stamped with ``timestamp``."""
    match event:
        case TaskSucceeded():
            return {"type": "task-succeeded", "timestamp": timestamp, "worker": event.worker,
                    "id": event.id, "task": event.task, "state": "SUCCESS",
                    "runtime": event.duration}
        case TaskAttemptFailed():
            kind = "task-retried" if event.will_retry else "task-failed"
            return {"type": kind, "timestamp": timestamp, "worker": event.worker,
                    "id": event.id, "task": event.task, "state": TYPES[kind],
                    "runtime": event.duration, "error": _cut(event.error),
                    "will_retry": event.will_retry}
        case TaskReceived():
            return {"type": "task-received", "timestamp": timestamp, "worker": event.worker,
                    "id": event.id, "task": event.task, "queue": event.queue,
                    "state": "RECEIVED"}
        case TaskStarted():
            return {"type": "task-started", "timestamp": timestamp, "worker": event.worker,
                    "id": event.id, "task": event.task, "queue": event.queue,
                    "state": "STARTED", "attempt": event.attempt}
        case TaskSent():
            return {"type": "task-sent", "timestamp": timestamp, "sender": event.sender,
                    "id": event.id, "task": event.task, "queue": event.queue,
                    "state": "SENT", "eta": event.eta}
        case TaskRevoked():
            return {"type": "task-revoked", "timestamp": timestamp, "worker": event.worker,
                    "id": event.id, "task": event.task, "state": "REVOKED",
                    "reason": _cut(event.reason)}
        case TaskDeadLettered():
            return {"type": "task-dead-lettered", "timestamp": timestamp,
                    "worker": event.worker, "id": event.id, "queue": event.queue,
                    "state": "DEAD", "reason": _cut(event.reason)}
        case WorkerOnline():
            return {"type": "worker-online", "timestamp": timestamp, "worker": event.worker,
                    "state": "ONLINE", "queues": list(event.queues), "pool": event.pool,
                    "concurrency": event.concurrency}
        case WorkerHeartbeat():
            return {"type": "worker-heartbeat", "timestamp": timestamp,
                    "worker": event.worker, "state": "HEARTBEAT", "running": event.running,
                    "processed": event.processed}
        case WorkerOffline():
            return {"type": "worker-offline", "timestamp": timestamp, "worker": event.worker,
                    "state": "OFFLINE", "processed": event.processed}
    raise TypeError(f"not a hubbub event: {type(event).__name__}")  # pragma: no cover


# The events of every task (received, started, succeeded) travel as arrays, the others as
# objects: [type, timestamp, *fields] with the fields of the type in this order. Built
# with one attrgetter call each, and about a third of the bytes.
_COMPACT: dict[type, tuple[str, Callable[[Any], tuple[Any, ...]]]] = {
    TaskReceived: ("task-received", attrgetter("id", "task", "queue", "worker")),
    TaskStarted: ("task-started", attrgetter("id", "task", "queue", "worker", "attempt")),
    TaskSucceeded: ("task-succeeded", attrgetter("id", "task", "worker", "duration")),
}
_ARRAY_FIELDS: dict[str, tuple[str, ...]] = {
    "task-received": ("id", "task", "queue", "worker"),
    "task-started": ("id", "task", "queue", "worker", "attempt"),
    "task-succeeded": ("id", "task", "worker", "runtime"),
}


Row = tuple[Any, ...]  # an event in its array form: (type, timestamp, *fields)


def received_row(timestamp: float, id: str, task: str, queue: str, worker: str) -> Row:
    """``task-received`` in its array form, built without an event object (hot path)."""
    return ("task-received", timestamp, id, task, queue, worker)


def started_row(timestamp: float, id: str, task: str, queue: str, worker: str,
                attempt: int) -> Row:
    """``task-started`` in its array form, built without an event object (hot path)."""
    return ("task-started", timestamp, id, task, queue, worker, attempt)


def encode_batch(events: Iterable[tuple[float, Event] | Row]) -> bytes:
    """One plane message holding ``(timestamp, event)`` pairs and rows, in order."""
    out: list[Any] = []
    for item in events:
        if type(item[0]) is str:  # a row already
            out.append(item)
            continue
        ts, event = item
        compact = _COMPACT.get(type(event))
        out.append(to_wire(event, ts) if compact is None
                   else (compact[0], ts, *compact[1](event)))
    return json_dumps({"v": VERSION, "events": out})


def _expand(raw: object) -> object:
    """The object form of an event sent as an array; anything else as it is."""
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
        return raw
    names = _ARRAY_FIELDS.get(raw[0])
    if names is None or len(raw) != len(names) + 2:
        return None
    return {"type": raw[0], "timestamp": raw[1], "state": TYPES[raw[0]],
            **dict(zip(names, raw[2:], strict=True))}


@dataclass(frozen=True, slots=True)
class WireEvent:
    """An event as read from the wire; fields it did not carry (or carried wrong) are empty.

    ``data`` holds every well-typed field read, for ``--json`` output.
    """

    type: str
    timestamp: float
    worker: str = ""
    id: str = ""
    task: str = ""
    queue: str = ""
    state: str = ""
    runtime: float | None = None
    error: str = ""
    data: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_wire(cls, raw: object) -> WireEvent | None:
        """The event ``raw`` describes, or None when it is not an object with a ``type``."""
        if not isinstance(raw, dict):
            return None
        data: dict[str, Any] = {}
        for key in _TEXT:
            value = raw.get(key)
            if isinstance(value, str):
                data[key] = _cut(value)
        for key in _NUMBER:
            value = raw.get(key)
            if (isinstance(value, int | float) and not isinstance(value, bool)
                    and math.isfinite(value)):
                data[key] = float(value)
        for key in _INT:
            value = raw.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                data[key] = value
        if isinstance(raw.get("will_retry"), bool):
            data["will_retry"] = raw["will_retry"]
        queues = raw.get("queues")
        if isinstance(queues, list):
            data["queues"] = [q for q in queues if isinstance(q, str)][:100]
        if "type" not in data:
            return None
        return cls(data["type"], data.get("timestamp", 0.0), data.get("worker", ""),
                   data.get("id", ""), data.get("task", ""), data.get("queue", ""),
                   data.get("state", ""), data.get("runtime"), data.get("error", ""), data)

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON-compatible dict (what ``hubbub events --json`` prints)."""
        return dict(self.data)


def decode_batch(body: bytes) -> list[WireEvent]:
    """The events of one plane message; never raises (foreign data gives none)."""
    try:
        data = json_loads(body)
    except Exception:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        return []
    return [e for raw in data["events"] if (e := WireEvent.from_wire(_expand(raw))) is not None]
