"""What the task history keeps of a task beyond its row: its arguments (a masked preview),
its place in a workflow, the retry it was sent as, and each attempt's outcome.

The worker attaches a :class:`TaskNote` and an :class:`Attempt` to the records it writes
(``ResultRecord.note`` / ``.attempt``); every result store keeps them beside the history row
(never in the result record) for as long as the row, and :meth:`ResultBackend.history_detail
<hubbub.results.base.ResultBackend.history_detail>` reads them back as a
:class:`HistoryDetail`. A note never holds a secret: the preview is cut and masked before
it is attached (:func:`hubbub.worker.history.note_of`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hubbub.codecs import json_dumps, json_loads

__all__ = ["MAX_ARGS", "MAX_ATTEMPTS", "RETRY_OF", "Attempt", "HistoryDetail", "TaskNote"]

MAX_ARGS = 2048  # characters of an argument preview a note keeps
MAX_ATTEMPTS = 20  # attempts of one task the history keeps (the latest)
RETRY_OF = "hubbub-retry-of"  # the header naming the task a dashboard retry sends again


@dataclass(frozen=True, slots=True)
class TaskNote:
    """A task's arguments and links, as the history shows them.

    Attributes:
        args: ``{"args": [...], "kwargs": {...}}`` as JSON text (``repr`` where JSON
            cannot carry them), secret-looking keys and URL passwords masked, cut to
            :data:`MAX_ARGS` characters.
        exact: whether ``args`` is the arguments themselves, unmasked and uncut (only then
            may they be sent again).
        queue: the queue the task came from.
        parent: the task whose value started this one (the previous step of a chain).
        root: the first task of its workflow.
        chord: the chord this task joins (a header member's last task).
        children: the tasks this one starts when it succeeds (the next step, callbacks,
            the body of its chord when it completes the chord).
        retry_of: the task this one was sent again for (a dashboard retry).
    """

    args: str | None = None
    exact: bool = False
    queue: str | None = None
    parent: str | None = None
    root: str | None = None
    chord: str | None = None
    children: tuple[str, ...] = ()
    retry_of: str | None = None

    def arguments(self) -> tuple[list[Any], dict[str, Any]] | None:
        """The positional and keyword arguments, when ``exact``; else None."""
        if not self.exact or self.args is None:
            return None
        raw = json_loads(self.args.encode())
        return list(raw["args"]), dict(raw["kwargs"])

    def to_json(self) -> dict[str, Any]:
        return {"args": self.args, "exact": self.exact, "queue": self.queue,
                "parent": self.parent, "root": self.root, "chord": self.chord,
                "children": list(self.children), "retry_of": self.retry_of}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TaskNote:
        return cls(raw.get("args"), bool(raw.get("exact")), raw.get("queue"),
                   raw.get("parent"), raw.get("root"), raw.get("chord"),
                   tuple(str(c) for c in raw.get("children") or ()), raw.get("retry_of"))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a task: when it ended, where, how, and how long until the next.

    Attributes:
        number: the attempt, from 1.
        at: when it ended (epoch seconds).
        worker: the worker that ran it.
        outcome: ``RETRY`` (it failed and runs again), ``FAILURE``, ``SUCCESS`` or
            ``REVOKED``.
        error: ``type: message`` of its error, cut, masked (None when it succeeded).
        delay: seconds until the next attempt (``RETRY`` only).
    """

    number: int
    at: float
    worker: str | None
    outcome: str
    error: str | None = None
    delay: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"n": self.number, "at": self.at, "worker": self.worker,
                "outcome": self.outcome, "error": self.error, "delay": self.delay}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Attempt:
        return cls(int(raw["n"]), float(raw["at"]), raw.get("worker"), str(raw["outcome"]),
                   raw.get("error"), raw.get("delay"))


@dataclass(frozen=True, slots=True)
class HistoryDetail:
    """What the history keeps of one task beyond its row.

    Attributes:
        note: its arguments and links (None: written by a worker that kept none).
        attempts: its latest :data:`MAX_ATTEMPTS` attempts, oldest first.
        retried_as: the task a dashboard sent again for this one.
    """

    note: TaskNote | None = None
    attempts: list[Attempt] = field(default_factory=list)
    retried_as: str | None = None


def dump(value: TaskNote | Attempt) -> bytes:
    """``value`` as stored: JSON."""
    return json_dumps(value.to_json())


def load_note(data: bytes | str | None) -> TaskNote | None:
    """The note stored as ``data`` (None stays None; unreadable data reads as None)."""
    raw = _load(data)
    return None if raw is None else TaskNote.from_json(raw)


def load_attempts(datas: list[Any]) -> list[Attempt]:
    """The attempts stored as ``datas``, oldest first, each readable one once by number."""
    found: dict[int, Attempt] = {}
    for data in datas:
        raw = _load(data)
        if raw is not None:
            try:
                attempt = Attempt.from_json(raw)
            except (KeyError, TypeError, ValueError):
                continue
            found[attempt.number] = attempt
    return [found[n] for n in sorted(found)][-MAX_ATTEMPTS:]


def _load(data: bytes | str | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        raw = json_loads(data.encode() if isinstance(data, str) else data)
    except (ValueError, UnicodeError):
        return None
    return raw if isinstance(raw, dict) else None
