"""The result-store seam: task states and return values, kept apart from the broker.

A backend stores :class:`ResultRecord` values by task id. Writes are batched upserts with
one rule that every backend enforces atomically: a record in a *sticky* state (SUCCESS,
REVOKED) is never replaced, so a late or duplicate write cannot undo a result or a revoke.
FAILURE may be replaced, because a dead letter can be requeued and run again.

Every backend stores what it is given without raising for odd text: an error message is cut
to ``MAX_ERROR_MESSAGE`` characters and a traceback to its last ``MAX_TRACEBACK`` (each with
a note that it was cut), lone surrogates are stored as ``\\udcff`` escapes, and an id holding
them is still found by ``get`` (see :func:`id_bytes`).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from hubbub._text import MAX_REASON, cap, clean_text
from hubbub.codecs import Undecodable, json_dumps, json_loads, pack, tagged, unpack
from hubbub.errors import ResultError
from hubbub.limits.store import LimitStore
from hubbub.results.history import Attempt, HistoryDetail, TaskNote

MAX_ERROR_MESSAGE = MAX_REASON  # characters of an ErrorInfo message a store keeps
MAX_TRACEBACK = 16_384  # characters of a traceback a store keeps (its end: the raise)


class State(enum.StrEnum):
    """Where a task is. PENDING also means "unknown": no record (yet, or any more).

    The worker writes STARTED when a task begins, RETRY when it failed and will run again,
    and one of the :data:`READY_STATES` when it is done.
    """

    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"


# The one spelling of "finished": use these sets rather than listing the states again.
READY_STATES = frozenset({State.SUCCESS, State.FAILURE, State.REVOKED})  # no further change
STICKY_STATES = frozenset({State.SUCCESS, State.REVOKED})  # a worker must not run them (again)
# The store rule, the same in every backend and applied atomically: nothing replaces
# SUCCESS, and REVOKED is replaced only by what a run of the task ended in (it ran anyway,
# having started before the revoke reached it: the record says what really happened).
REPLACE_REVOKED = frozenset({State.SUCCESS, State.FAILURE, State.REVOKED})


def replaces(new: State, old: State | None) -> bool:
    """Whether a record in state ``new`` may replace a live one in state ``old``."""
    if old is None or old not in STICKY_STATES:
        return True
    return old == State.REVOKED and new in REPLACE_REVOKED


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A remote exception, as text: its type name, message and traceback."""

    type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """One task's state and outcome.

    ``value`` is the JSON-compatible return value (SUCCESS). ``error`` says what went wrong
    (FAILURE, REVOKED, and the last error of RETRY). Times are epoch seconds. While the task
    runs (STARTED), ``status`` is a state of its own it reported with
    ``current_task().update_state(...)`` (e.g. ``"PROGRESS"``) and ``meta`` what it said.
    ``note`` and ``attempt`` are for the task history only (never stored in the record):
    the task's arguments and links, and the attempt this record ends
    (:mod:`hubbub.results.history`).
    """

    id: str
    state: State
    task: str | None = None
    value: Any = None
    error: ErrorInfo | None = None
    retries: int = 0
    worker: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    status: str | None = None
    meta: dict[str, Any] | None = None
    note: TaskNote | None = None
    attempt: Attempt | None = None

    @property
    def ready(self) -> bool:
        return self.state in READY_STATES


# -- history --
HISTORY_TTL = 7 * 86400.0  # seconds a history row is kept after its last change


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """What the task history keeps of one task: its latest state and times (epoch seconds),
    never its arguments or value (those stay in the result record, with its shorter TTL)."""

    id: str
    task: str | None
    state: State
    worker: str | None = None
    retries: int = 0
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0

    @property
    def runtime(self) -> float | None:
        """Seconds the last run took, once finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    @property
    def wait(self) -> float | None:
        """Seconds between the task's creation and its start."""
        if self.created_at is None or self.started_at is None:
            return None
        return max(0.0, self.started_at - self.created_at)

    @classmethod
    def of(cls, record: ResultRecord, now: float) -> HistoryRow:
        """The history row of ``record``, changed at ``now`` (its names made storable)."""
        task = None if record.task is None else clean_text(record.task)
        worker = None if record.worker is None else clean_text(record.worker)
        return cls(record.id, task, record.state, worker, record.retries,
                   record.created_at, record.started_at, record.finished_at, now)

    def to_json(self) -> dict[str, Any]:
        return {"id": clean_text(self.id), "task": self.task, "state": self.state.value,
                "worker": self.worker, "retries": self.retries, "created_at": self.created_at,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "updated_at": self.updated_at}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> HistoryRow:
        return cls(raw["id"], raw.get("task"), State(raw["state"]), raw.get("worker"),
                   int(raw.get("retries") or 0), raw.get("created_at"),
                   raw.get("started_at"), raw.get("finished_at"),
                   float(raw.get("updated_at") or 0.0))


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A task search: every given field must match (``since``/``until`` bound the time of
    the row's last change, epoch seconds); ``limit`` rows at most, newest first."""

    id: str | None = None
    task: str | None = None
    state: State | None = None
    worker: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50

    def matches(self, row: HistoryRow) -> bool:
        """Whether ``row`` passes every filter of this query."""
        return ((self.id is None or row.id == self.id)
                and (self.task is None or row.task == self.task)
                and (self.state is None or row.state == self.state)
                and (self.worker is None or row.worker == self.worker)
                and (self.since is None or row.updated_at >= self.since)
                and (self.until is None or row.updated_at < self.until))


def id_bytes(id: str) -> bytes:
    """The bytes of a task id for a key: UTF-8, lone surrogates kept ("surrogatepass"), so
    that every str id has its own key and an ordinary id the key it always had."""
    return id.encode("utf-8", "surrogatepass")


def bounded(record: ResultRecord) -> ResultRecord:
    """``record`` with its error text made storable: cut to the limits, no lone surrogates.

    Returns ``record`` itself when nothing needed changing (the common case).
    """
    error = record.error
    if error is None:
        return record
    message = cap(error.message, MAX_ERROR_MESSAGE)
    trace = clean_text(error.traceback)
    if len(trace) > MAX_TRACEBACK:
        cut = len(trace) - MAX_TRACEBACK
        trace = f"[{cut} characters cut]\n" + trace[cut:]
    kind = cap(error.type, 256)
    if (message, trace, kind) == (error.message, error.traceback, error.type):
        return record
    return replace(record, error=ErrorInfo(kind, message, trace))


def _clean(value: Any) -> Any:
    """``value`` with every str in it made encodable (lone surrogates escaped)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def encode_record(record: ResultRecord) -> bytes:
    """Bytes for a record; JSON so that any tool can read the store.

    Error text is bounded (:func:`bounded`); text holding lone surrogates, which UTF-8
    cannot carry, is stored with them escaped. The value is tagged where plain JSON falls
    short (:func:`hubbub.codecs.pack`), the same packing the worker checks a return value
    with before it reports a success.

    Raises:
        hubbub.codecs.Unencodable: the value holds something no codec can carry (the worker
            has already turned such a success into a ``ResultNotEncodable`` failure).
    """
    fields = _fields(bounded(record))
    fields["value"] = pack(fields["value"])
    if record.status is not None:  # only while a task reports progress: records stay small
        fields["status"] = record.status
        fields["meta"] = pack(record.meta)
    try:
        return json_dumps(fields)
    except (TypeError, ValueError):  # a lone surrogate; else the same error comes again
        return json_dumps(_clean(fields))


def _fields(record: ResultRecord) -> dict[str, Any]:
    error = record.error
    return {  # by hand: dataclasses.asdict deep-copies, on the worker's hot path
        "id": record.id, "state": record.state.value, "task": record.task,
        "value": record.value,
        "error": None if error is None else {"type": error.type, "message": error.message,
                                             "traceback": error.traceback},
        "retries": record.retries, "worker": record.worker, "created_at": record.created_at,
        "started_at": record.started_at, "finished_at": record.finished_at,
    }


def decode_record(data: bytes) -> ResultRecord:
    """The record stored as ``data`` by :func:`encode_record`.

    Raises:
        ResultError: the value holds a type tag this process has not registered (or a
            malformed one); the message names the tag.
    """
    raw = json_loads(data)
    if tagged(data):  # else the value is plain JSON, used as parsed
        try:
            raw["value"] = unpack(raw["value"])
            if raw.get("meta") is not None:
                raw["meta"] = unpack(raw["meta"])
        except Undecodable as exc:
            raise ResultError(f"result of task {raw.get('id')!r} cannot be decoded: {exc}"
                              ) from exc
    error = raw.pop("error")
    return ResultRecord(
        **{**raw, "state": State(raw["state"])},
        error=ErrorInfo(**error) if error else None,
    )


class ResultBackend(abc.ABC):
    """Stores task states and values. One instance belongs to one event loop."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections and create what is missing."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    async def store(self, records: Sequence[ResultRecord], *, ttl: float | None) -> None:
        """Upsert records, each kept for ``ttl`` seconds (None: forever).

        A stored record is replaced only where :func:`replaces` allows: SUCCESS stays, and
        REVOKED gives way only to SUCCESS, FAILURE or REVOKED.
        """

    async def store_unless(self, records: Sequence[ResultRecord], *, ttl: float | None,
                           unless: frozenset[State]) -> list[str]:
        """Store each record unless a live record of its id is in one of the ``unless``
        states (and the store rule allows it); atomic per record in the shipped backends.

        Returns:
            The ids that were stored.
        """
        found = await self.get([r.id for r in records])  # a backend without atomic support
        kept = [r for r in records if (old := found.get(r.id)) is None
                or (old.state not in unless and replaces(r.state, old.state))]
        await self.store(kept, ttl=ttl)
        return [r.id for r in kept]

    @abc.abstractmethod
    async def get(self, ids: Sequence[str]) -> dict[str, ResultRecord]:
        """The records that exist and have not expired, by id."""

    @abc.abstractmethod
    async def wait(self, id: str, *, timeout: float | None) -> ResultRecord | None:
        """Wait until the record is ready (SUCCESS, FAILURE, REVOKED).

        Returns:
            The ready record, or None if ``timeout`` seconds passed first.
        """

    @abc.abstractmethod
    async def forget(self, ids: Sequence[str]) -> None:
        """Delete records."""

    # -- the worker registry (hubbub.control.registry reads and writes it) -----------------

    @abc.abstractmethod
    async def heartbeat(self, name: str, info: dict[str, Any], *, ttl: float) -> None:
        """Upsert worker ``name``'s entry, live for ``ttl`` seconds unless renewed.

        Args:
            name: the worker's name.
            info: a JSON-compatible dict (see :class:`hubbub.control.registry.WorkerInfo`).
            ttl: seconds the entry stays live without another heartbeat.
        """

    @abc.abstractmethod
    async def workers(self) -> dict[str, dict[str, Any]]:
        """The live worker entries, by name. An entry that is not a JSON object is skipped."""

    @abc.abstractmethod
    async def forget_worker(self, name: str) -> None:
        """Delete worker ``name``'s entry (a clean stop)."""

    # -- limits (hubbub.limits: unique jobs, rate and concurrency limits) -------------------

    @abc.abstractmethod
    def limits(self) -> LimitStore:
        """The unique keys, rate reservations and concurrency slots kept in this store, on
        its own connection (usable once ``connect()`` was called)."""

    # -- canvas: chord joins and group membership (hubbub.canvas) ----------------------------

    @abc.abstractmethod
    async def chord_join(self, members: Sequence[ChordMember], *, ttl: float | None
                         ) -> list[ChordJoin]:
        """Count each finished header task of a chord, atomically, by distinct id.

        A member's first value is kept; a member that finished twice (it ran again after a
        crash) is counted once. Each chord's state lives ``ttl`` seconds (None: forever).

        Returns:
            For each member, in order: the chord's count of distinct members after the add,
            whether this call added it, and whether the body was marked sent.
        """

    @abc.abstractmethod
    async def chord_values(self, chord: str) -> list[Any]:
        """The values the chord's members joined with, in header order (by index)."""

    @abc.abstractmethod
    async def chord_mark(self, chord: str, flag: str, *, ttl: float | None) -> bool:
        """Set ``flag`` (``"fired"``: the body was sent; ``"failed"``: a member failed) on
        the chord, atomically.

        Returns:
            True when this call set it (it was not set before).
        """

    @abc.abstractmethod
    async def save_group(self, group: str, ids: Sequence[str], *, ttl: float | None) -> None:
        """Keep the ids of a group's members (for ``GroupResult.restore``)."""

    @abc.abstractmethod
    async def read_group(self, group: str) -> list[str] | None:
        """The ids saved for ``group``, in order; None when there are none (or expired)."""

    # -- history --------------------------------------------------------------------------
    # A compact, searchable row per task, written with its record (same transaction in
    # SQLite, the next round trip in Redis) and kept ``history_ttl`` seconds from its last
    # change, longer than results, so that the dashboard can show what ran last week.

    history_ttl: float | None = HISTORY_TTL  # None: write no history rows

    @abc.abstractmethod
    async def search_history(self, query: HistoryQuery) -> list[HistoryRow]:
        """The history rows matching ``query``, most recently changed first.

        Raises:
            ResultUnavailable: the store cannot be reached.
        """

    @abc.abstractmethod
    async def prune_history(self, before: float) -> None:
        """Delete the history rows last changed before ``before`` (epoch seconds), with
        their details."""

    @abc.abstractmethod
    async def history_detail(self, id: str) -> HistoryDetail:
        """What the history keeps of task ``id`` beyond its row: the latest note written
        with its records, its attempts (the latest :data:`~hubbub.results.history.MAX_ATTEMPTS`,
        oldest first) and the task it was retried as. Empty when none is kept.

        Raises:
            ResultUnavailable: the store cannot be reached.
        """

    @abc.abstractmethod
    async def link_retry(self, id: str, retry: str) -> None:
        """Record that task ``retry`` was sent again for task ``id`` (a dashboard retry),
        kept as long as ``id``'s history. Nothing is written while history is off."""


# -- canvas -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChordMember:
    """A header task of chord ``chord`` that finished with ``value``, at ``index``."""

    chord: str
    member: str
    index: int
    value: Any


@dataclass(frozen=True, slots=True)
class ChordJoin:
    """What one join found: the count of distinct finished members after it, whether it
    added its member, and whether the body had been marked sent."""

    count: int
    added: bool
    fired: bool


def encode_value(index: int, value: Any) -> bytes:
    """A chord member's stored ``[index, value]`` (JSON, tagged as results are)."""
    return json_dumps([index, pack(value)])


def decode_values(stored: Sequence[bytes | str]) -> list[Any]:
    """The values of stored members (:func:`encode_value`), ordered by index.

    Raises:
        ResultError: a value holds a type tag this process has not registered.
    """
    pairs = []
    for data in stored:
        raw = data.encode() if isinstance(data, str) else data
        index, value = json_loads(raw)
        pairs.append((index, value))
    pairs.sort(key=lambda pair: pair[0])
    try:
        return [unpack(value) for _, value in pairs]
    except Undecodable as exc:
        raise ResultError(f"a chord member's value cannot be decoded: {exc}") from exc


def encode_entry(info: dict[str, Any]) -> bytes:
    """A registry entry's bytes: JSON, with any text no encoding can carry escaped."""
    try:
        return json_dumps(info)
    except (TypeError, ValueError):
        return json_dumps(_clean(info))


def decode_entry(data: bytes | str) -> dict[str, Any] | None:
    """The entry stored as ``data``, or None when it is not a JSON object (never raises)."""
    try:
        raw = json_loads(data.encode() if isinstance(data, str) else data)
    except (ValueError, UnicodeError):
        return None
    return raw if isinstance(raw, dict) else None
