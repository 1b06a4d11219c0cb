"""Dead-letter retention and the filters of ``delete_dead``/``purge_dead``, for every transport.

Dead letters are kept at most ``Retention.ttl`` seconds and at most ``Retention.limit`` per
queue, oldest dropped first. A transport takes both as constructor keywords (``dead_ttl``,
``dead_max``; the hub passes its ``Limits``) or as URL query options of the same names, which
win: they name this one broker. ``retention_of`` reads them off the URL before the
transport's own URL parsing sees it.

``task_of`` reads the task name of a dead body without trusting it: the body may be another
program's message, damaged bytes or a signed envelope (read unverified, to match only).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from hubbub.codecs import json_loads
from hubbub.errors import ConfigurationError
from hubbub.signing import unverified_body

DEFAULT_TTL = 7 * 86400.0
DEFAULT_MAX = 10_000
OPTIONS = ("dead_ttl", "dead_max")  # URL query options every transport accepts

log = logging.getLogger("hubbub.transports")

# A list of URLs for a cluster is split on ';' or ',' before the next scheme (as _plugins).
_NEXT_URL = re.compile(r"([;,]\s*)(?=[A-Za-z][A-Za-z0-9+.-]*://)")


@dataclass(frozen=True, slots=True)
class Retention:
    """How long and how many dead letters a transport keeps.

    Attributes:
        ttl: seconds a dead letter is kept after it died.
        limit: dead letters kept per queue; past it the oldest are dropped.
    """

    ttl: float = DEFAULT_TTL
    limit: int = DEFAULT_MAX

    def __post_init__(self) -> None:
        ttl = self.ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) \
                or ttl <= 0:
            raise ConfigurationError(f"dead_ttl must be a number of seconds above 0, not {ttl!r}")
        limit = self.limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"dead_max must be a whole number of at least 1, "
                                     f"not {limit!r}")

    def cutoff(self, now: float) -> float:
        """Dead letters that died before this instant are past their retention."""
        return now - self.ttl


def retention_of(url: str, dead_ttl: float | None = None,
                 dead_max: int | None = None) -> tuple[str, Retention]:
    """``url`` without the ``dead_ttl``/``dead_max`` query options, and the retention.

    A URL option wins over the keyword; what neither gives is the default (7 days, 10,000).

    Raises:
        ConfigurationError: an option is not a positive number (seconds; a whole count).
    """
    found: dict[str, str] = {}
    parts = _NEXT_URL.split(url)
    for i in range(0, len(parts), 2):  # odd items are the separators
        pieces = urlsplit(parts[i])
        query = parse_qsl(pieces.query, keep_blank_values=True)
        if any(k in OPTIONS for k, _ in query):
            found.update((k, v) for k, v in query if k in OPTIONS)
            rest = urlencode([(k, v) for k, v in query if k not in OPTIONS])
            parts[i] = urlunsplit(pieces._replace(query=rest))
    ttl = DEFAULT_TTL if dead_ttl is None else dead_ttl
    limit = DEFAULT_MAX if dead_max is None else dead_max
    try:
        if "dead_ttl" in found:
            ttl = float(found["dead_ttl"])
        if "dead_max" in found:
            limit = int(found["dead_max"])
    except ValueError as exc:
        raise ConfigurationError(f"bad dead_ttl or dead_max in the broker URL: {exc}") from None
    return "".join(parts), Retention(float(ttl), limit)


def task_of(body: object) -> str | None:
    """The task a dead body names (signed or not), or None when it cannot be read.

    Never raises: the body came from the broker and may be anything.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        return None
    try:
        value = json_loads(unverified_body(bytes(body)))
    except (ValueError, TypeError, RecursionError):
        return None
    task = value.get("task") if isinstance(value, dict) else None
    return task if isinstance(task, str) and task else None


@dataclass(frozen=True, slots=True)
class DeadFilter:
    """Which dead letters ``purge_dead`` removes; every given condition must hold.

    Attributes:
        older_than: died at least this many seconds before ``now``.
        task: the body names this task.
        queue: of this queue.
    """

    older_than: float | None = None
    task: str | None = None
    queue: str | None = None

    def __post_init__(self) -> None:
        age = self.older_than
        if age is not None and (not isinstance(age, int | float) or not age >= 0):
            raise ConfigurationError(f"older_than must be seconds, 0 or more, not {age!r}")

    def before(self, now: float) -> float | None:
        """The instant a matching dead letter died at or before; None for any time."""
        return None if self.older_than is None else now - self.older_than

    def matches(self, queue: str, died_at: float, now: float, body: object) -> bool:
        """True when a dead letter of ``queue`` that died at ``died_at`` is to be removed."""
        return self.matches_record(queue, died_at, now) and self.names_task(body)

    def matches_record(self, queue: str, died_at: float, now: float) -> bool:
        """True when the queue and the age match (the body is not looked at)."""
        before = self.before(now)
        if self.queue is not None and queue != self.queue:
            return False
        return before is None or died_at <= before

    def names_task(self, body: object) -> bool:
        """True when no task is asked for, or ``body`` names it."""
        return self.task is None or task_of(body) == self.task


def dropped(queue: str, count: int, why: str) -> None:
    """Log that ``count`` dead letters of ``queue`` were dropped, and why."""
    if count > 0:
        log.warning("dropped %d dead letter(s) of queue %r: %s", count, queue, why)
