"""Schedule entries: which task runs when, as plain data, and the slot arithmetic.

A *slot* is one instant (epoch seconds, UTC) at which an entry is due. Every beat process
computes the same slots from the same entry, so a slot can be claimed once in the shared
store and its task id can be derived from it (:func:`slot_id`).

- ``Interval(seconds)``: slots at whole multiples of ``seconds`` since the Unix epoch, so
  ``every=30`` fires at :00 and :30 of each minute, on every process alike.
- ``Cron(expression, tz)``: slots from croniter in the named IANA time zone. DST follows
  croniter: a wall time that does not exist (spring forward) runs at the first instant after
  the gap; a wall time that happens twice (fall back) runs twice.

This module only parses and computes; it does no I/O and knows nothing of the beat runtime,
so ``hub.py`` may import it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from hubbub.errors import ConfigurationError, ScheduleError
from hubbub.settings import seconds

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

# The cron parser, an extra (pip install hubbub[schedule]), imported by the first cron
# schedule, not by every process that imports hubbub (issue #18: idle worker memory).
# Ellipsis: not imported yet; None: not installed.
_croniter: Any = ...


def _cron_parser() -> Any:
    global _croniter
    if _croniter is ...:
        try:
            from croniter import croniter  # type: ignore[import-untyped]
        except ImportError:  # pragma: no cover - exercised by patching _croniter to None
            croniter = None
        _croniter = croniter
    return _croniter

Missed: TypeAlias = Literal["once", "skip"]
MISSED_POLICIES: tuple[str, ...] = ("once", "skip")
MIN_INTERVAL = 0.001  # seconds; slots are kept to the microsecond
_SEARCH = 8  # tries before a cron expression is declared to have no slot after an instant


@dataclass(frozen=True, slots=True)
class Interval:
    """Slots every ``seconds``, anchored at the Unix epoch.

    Attributes:
        seconds: the period, at least one millisecond.
    """

    seconds: float

    def next_after(self, instant: float) -> float:
        """The first slot strictly after ``instant`` (epoch seconds)."""
        k = math.floor(instant / self.seconds) + 1
        slot = self._slot(k)
        while slot <= instant:  # float rounding at a boundary
            k += 1
            slot = self._slot(k)
        return slot

    def latest_at_or_before(self, instant: float) -> float:
        """The last slot at or before ``instant``."""
        k = math.floor(instant / self.seconds)
        slot = self._slot(k)
        while slot > instant:
            k -= 1
            slot = self._slot(k)
        return slot

    def count_between(self, after: float, until: float) -> int:
        """How many slots lie in ``(after, until]``."""
        if until <= after:
            return 0
        first = self.next_after(after)
        if first > until:
            return 0
        return round((self.latest_at_or_before(until) - first) / self.seconds) + 1

    def _slot(self, k: int) -> float:
        return round(k * self.seconds, 6)

    def describe(self) -> str:
        """``every 30s`` style text for tables and logs."""
        return f"every {self.seconds:g}s"


@dataclass(frozen=True, slots=True)
class Cron:
    """Slots of a cron expression (5 fields, or 6 with seconds) in a time zone.

    Attributes:
        expression: e.g. ``"*/5 * * * *"``.
        tz: an IANA zone name, e.g. ``"Europe/Paris"`` (default UTC).
    """

    expression: str
    tz: str = "UTC"

    def _zone(self) -> ZoneInfo:
        from zoneinfo import ZoneInfo  # with the cron parser: when a cron schedule is used

        return ZoneInfo(self.tz)  # cached by zoneinfo; validated when the entry was made

    def next_after(self, instant: float) -> float:
        """The first slot strictly after ``instant`` (epoch seconds).

        Raises:
            ScheduleError: the expression has no slot after ``instant`` (e.g. 30 February).
        """
        start = instant
        for _ in range(_SEARCH):
            when = datetime.fromtimestamp(start, self._zone())
            found = _step(self.expression, when, forward=True)
            if found > instant:
                return found
            start = max(found, start) + 1.0  # croniter did not move forward; step past it
        raise ScheduleError(f"cron {self.expression!r} has no time after {_iso(instant)}")

    def latest_at_or_before(self, instant: float) -> float:
        """The last slot at or before ``instant``.

        Raises:
            ScheduleError: the expression has no slot at or before ``instant``.
        """
        when = datetime.fromtimestamp(instant, self._zone())
        previous = _step(self.expression, when, forward=False)
        following = self.next_after(previous)
        return following if following <= instant else previous

    def count_between(self, after: float, until: float, cap: int = 1000) -> int:
        """How many slots lie in ``(after, until]``, counting no further than ``cap``."""
        count, slot = 0, after
        while count < cap:
            slot = self.next_after(slot)
            if slot > until:
                break
            count += 1
        return count

    def describe(self) -> str:
        """``cron */5 * * * * (Europe/Paris)`` style text for tables and logs."""
        return f"cron {self.expression} ({self.tz})"


Trigger: TypeAlias = Interval | Cron


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """One periodic task: which task, with which arguments, on which trigger.

    Attributes:
        name: unique key of the entry (default: the task's name).
        task: the task's name, as workers know it.
        trigger: an :class:`Interval` or a :class:`Cron`.
        args: positional arguments of every run.
        kwargs: keyword arguments of every run.
        missed: what to do with slots the beat was too late for (more than the beat's
            ``grace`` late, e.g. while no beat ran): ``"once"`` runs the task once for all
            of them; ``"skip"`` drops them and waits for the next slot.
        queue: queue to send to (default: the task's).
        priority: 0..9 (default: the task's).
        expires: seconds after its slot when a run is no longer worth starting (default:
            the task's ``expires``, counted from sending).
    """

    name: str
    task: str
    trigger: Trigger
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    missed: Missed = "once"
    queue: str | None = None
    priority: int | None = None
    expires: float | None = None


def make_trigger(
    *, cron: str | None = None, every: float | timedelta | None = None, tz: str | None = None,
) -> Trigger:
    """Parse and check a schedule given as ``cron`` (with optional ``tz``) or ``every``.

    Raises:
        ScheduleError: neither or both given, a bad cron expression, an unknown time zone,
            ``tz`` with ``every``, or an interval shorter than a millisecond.
        ConfigurationError: ``cron`` without croniter installed (``pip install hubbub[schedule]``).
    """
    if (cron is None) == (every is None):
        raise ScheduleError("give a schedule as cron='*/5 * * * *' or every=seconds, not "
                            + ("both" if cron is not None else "neither"))
    if every is not None:
        if tz is not None:
            raise ScheduleError("tz applies to cron schedules only; an interval counts "
                                "seconds and ignores wall-clock time")
        try:
            period = seconds(every, "every")
        except ConfigurationError as exc:
            raise ScheduleError(str(exc)) from None
        if period < MIN_INTERVAL:
            raise ScheduleError(f"every must be at least {MIN_INTERVAL}s, got {period}")
        return Interval(period)
    if not isinstance(cron, str) or not cron.strip():
        raise ScheduleError(f"cron must be an expression such as '*/5 * * * *', not {cron!r}")
    zone = check_zone(tz or "UTC")
    trigger = Cron(" ".join(cron.split()), zone)
    trigger.next_after(946_684_800.0)  # 2000-01-01: parses it, and proves a slot exists
    return trigger


def check_zone(tz: str) -> str:
    """``tz`` if it names an IANA time zone.

    Raises:
        ScheduleError: unknown or malformed zone name.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # when a schedule names a zone

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleError(f"unknown time zone {tz!r}; use an IANA name such as "
                            "'Europe/Paris' or 'UTC'") from None
    return tz


def make_entry(
    task: str, trigger: Trigger, *, name: str | None = None, args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None, missed: str = "once", queue: str | None = None,
    priority: int | None = None, expires: float | timedelta | None = None,
) -> ScheduleEntry:
    """A checked :class:`ScheduleEntry`.

    Raises:
        ScheduleError: an empty name, an unknown ``missed`` policy, a priority outside 0..9,
            or a negative ``expires``.
    """
    entry_name = task if name is None else name
    if not entry_name:
        raise ScheduleError("a schedule entry needs a name")
    if missed not in MISSED_POLICIES:
        raise ScheduleError(f"missed must be 'once' or 'skip', not {missed!r}")
    if priority is not None and not 0 <= priority <= 9:
        raise ScheduleError(f"priority must be 0..9, got {priority}")
    try:
        expires_s = None if expires is None else seconds(expires, "expires")
    except ConfigurationError as exc:
        raise ScheduleError(str(exc)) from None
    return ScheduleEntry(
        name=entry_name, task=task, trigger=trigger, args=tuple(args), kwargs=dict(kwargs or {}),
        missed="once" if missed == "once" else "skip", queue=queue, priority=priority,
        expires=expires_s,
    )


def add_entry(schedules: MutableMapping[str, ScheduleEntry], entry: ScheduleEntry) -> ScheduleEntry:
    """Store ``entry`` under its name; the same entry twice (a re-import) is harmless.

    Raises:
        ScheduleError: another entry already has that name.
    """
    existing = schedules.get(entry.name)
    if existing is not None and existing != entry:
        raise ScheduleError(f"schedule entry {entry.name!r} already exists; pass name=... to "
                            "schedule the task a second time")
    schedules[entry.name] = entry
    return entry


def slot_id(entry: str, slot: float) -> str:
    """The task id of ``entry``'s run for ``slot``: the same on every beat process.

    Publishing a slot twice (a crash between publishing and recording it) therefore sends
    the same id twice, never two different tasks.
    """
    return f"{entry}@{_iso(slot)}"


def _iso(instant: float) -> str:
    when = datetime.fromtimestamp(instant, UTC)
    spec = "seconds" if when.microsecond == 0 else "microseconds"
    return when.isoformat(timespec=spec).replace("+00:00", "Z")


def _step(expression: str, start: datetime, *, forward: bool) -> float:
    """Epoch seconds of the cron slot after (or before) ``start``, through croniter.

    Raises:
        ConfigurationError: croniter is not installed.
        ScheduleError: croniter refuses the expression or finds no such slot.
    """
    parser = _cron_parser()
    if parser is None:
        raise ConfigurationError("cron schedules need an extra: pip install hubbub[schedule]")
    try:
        it = parser(expression, start)
        found = it.get_next(datetime) if forward else it.get_prev(datetime)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # croniter: ValueErrors
        raise ScheduleError(f"bad cron expression {expression!r}: {exc}") from None
    return float(found.timestamp())
