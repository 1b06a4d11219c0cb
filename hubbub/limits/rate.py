"""Rate strings (``"100/m"``) and the fleet-wide rate rule every limit store applies.

A rate of ``N/period`` lets one task start every ``(period + LAG_ALLOWANCE) / N`` seconds
across the whole fleet (a generic cell rate algorithm without burst): starts are spread
evenly, so no window of one period ever holds more than ``N`` of them, even as the tasks
themselves see them: a start runs a moment after its admission (the worker's loop wakes,
the pool takes it), and that moment varies. The allowance keeps ``N + 1`` starts more than
one period apart as long as it varies by less than :data:`LAG_ALLOWANCE`.

A worker reserves the next free start when it is near (within ``horizon`` seconds) and waits
for it without a pool slot; otherwise it gives the message back to the broker until a start
could be reserved.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import NamedTuple

from hubbub.errors import ConfigurationError

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*")
# Seconds added to each period before it is divided among its N starts: 2.5% of a rate per
# second, nothing that matters for one per minute or hour. On the 2-core machine the tests
# run on, a task's start lagged its admission by a few milliseconds, varying by less than
# this unless the machine was loaded past its cores (see docs/limits.md).
LAG_ALLOWANCE = 0.025
_EXAMPLE = "write it as a count per second, minute or hour, e.g. rate_limit=\"100/m\""


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` starts per ``period`` seconds, fleet-wide."""

    count: float
    period: float
    text: str

    @property
    def interval(self) -> float:
        """Seconds between two starts: ``N + 1`` of them span ``period + LAG_ALLOWANCE``."""
        return (self.period + LAG_ALLOWANCE) / self.count

    def __str__(self) -> str:
        return self.text


@functools.lru_cache(maxsize=256)
def parse_rate(text: str) -> Rate:
    """The :class:`Rate` of ``"100/m"``, ``"5/s"`` or ``"2000/h"``.

    Raises:
        ConfigurationError: not a positive count per ``s``, ``m`` or ``h``.
    """
    if not isinstance(text, str):
        raise ConfigurationError(f"rate_limit must be a string such as \"100/m\", not {text!r}")
    match = _RATE.fullmatch(text)
    if match is None:
        raise ConfigurationError(f"rate_limit {text!r} is not a rate; {_EXAMPLE}")
    count = float(match.group(1))
    if count <= 0 or not math.isfinite(count):
        raise ConfigurationError(f"rate_limit {text!r} must allow more than 0 starts; {_EXAMPLE}")
    return Rate(count, PERIODS[match.group(2)], f"{match.group(1)}/{match.group(2)}")


class Reservation(NamedTuple):
    """What a limit store answered a worker asking to start a rate-limited task.

    Attributes:
        granted: a start was reserved for it: run it at ``at``.
        at: with ``granted``, the reserved start; without, when a start could be reserved
            (give the message back until then). Epoch seconds on the store's clock: a worker
            waits for the instant rather than for a duration, so a slow answer does not
            shift its start (with Redis, workers' clocks should agree with Redis's, as NTP
            keeps them).
    """

    granted: bool
    at: float


def reserve(tat: float | None, now: float, interval: float, horizon: float, lead: float = 0.0
            ) -> tuple[Reservation, float | None]:
    """The rule itself, for the stores that run it in Python (memory, SQLite); Redis runs
    the same steps in Lua.

    Args:
        tat: the theoretical arrival time: the earliest start not yet reserved (None: none
            reserved yet).
        now: the store's clock.
        interval: seconds between two starts.
        horizon: the furthest ahead a start is reserved.
        lead: the soonest a start is reserved: time for the answer to reach the worker,
            so that the start is on time rather than late (and bunched with the next).

    Returns:
        The answer, and the new ``tat`` to store (None: unchanged).
    """
    start = now + lead if tat is None else max(tat, now + lead)
    if start - now > horizon:
        return Reservation(False, start - horizon), None
    return Reservation(True, start), start + interval
