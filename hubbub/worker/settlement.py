"""Settlement: what a finished task's outcome means for the broker and the result store.

:func:`settle` is a pure function of (envelope, task options, outcome, now): it performs no
I/O, so the retry, backoff and countdown rules are unit-tested without a broker. The worker
loop turns its :class:`Verdict` into buffered writes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from hubbub.errors import ErrorKind
from hubbub.job import Crashed, Failed, Outcome, Rejected, Succeeded, Terminated, TimedOut
from hubbub.results.base import ErrorInfo, State

if TYPE_CHECKING:
    from hubbub.message import Envelope
    from hubbub.task import TaskOptions

# A retry asked for further out than this is clamped to it; a transport clamps further to
# what its broker can hold (Beanstalkd's delay is a 32-bit count of seconds).
MAX_COUNTDOWN = 365 * 24 * 3600.0


def backoff(base: float, ceiling: float, retries: int, jitter: bool) -> float:
    """Seconds before retry number ``retries + 1``: exponential, capped, optionally jittered."""
    delay = min(ceiling, base * (2 ** min(retries, 63)))
    return random.uniform(delay / 2, delay) if jitter else delay


def clamp_countdown(countdown: float) -> float:
    """A usable countdown: negative becomes 0, infinite or huge becomes ``MAX_COUNTDOWN``."""
    if math.isnan(countdown):
        raise ValueError("countdown is NaN")
    return min(max(countdown, 0.0), MAX_COUNTDOWN)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a finished delivery.

    Attributes:
        state: the result to record: SUCCESS, RETRY, FAILURE, or REVOKED (terminated).
        value: the return value (SUCCESS).
        error: what went wrong (RETRY, FAILURE).
        retry: the envelope to publish before the delivery is acked (RETRY).
        countdown: seconds until the retry is due (RETRY).
        reason: why it failed, in one line (FAILURE).
        dead_reason: dead-letter the delivery with this reason instead of acking it (FAILURE
            of a message that could not run, or when failures are dead-lettered too).
    """

    state: State
    value: Any = None
    error: ErrorInfo | None = None
    retry: Envelope | None = None
    countdown: float = 0.0
    reason: str | None = None
    dead_reason: str | None = None

    @property
    def summary(self) -> str:
        return f"{self.error.type}: {self.error.message}" if self.error else ""


def settle(envelope: Envelope, spec: TaskOptions, outcome: Outcome, now: float, *,
           queue: str, dead_letter_failures: bool = False) -> Verdict:
    """The verdict on ``outcome`` of ``envelope``, which was delivered from ``queue``.

    A retry goes back to the queue the message came from, never to a queue named inside
    the (untrusted) envelope; a countdown that is NaN falls back to the task's backoff, one
    that is negative, infinite or absurdly large is clamped. Dead letters are for what
    could not run: a task that raised ``Reject`` is dead-lettered; one that ran and failed
    for good is a FAILURE only, unless ``dead_letter_failures``.
    """
    if isinstance(outcome, Succeeded):
        return Verdict(State.SUCCESS, value=outcome.value)
    if isinstance(outcome, Terminated):  # revoked: acked, never retried nor dead-lettered
        return Verdict(State.REVOKED, error=ErrorInfo(ErrorKind.TERMINATED, outcome.reason))
    error, retry, countdown = describe(outcome, spec)
    if retry and 0 <= envelope.retries < envelope.max_retries:
        if countdown is None or math.isnan(countdown):
            countdown = backoff(spec.retry_backoff, spec.retry_backoff_max, envelope.retries,
                                spec.retry_jitter)
        countdown = clamp_countdown(countdown)
        nxt = replace(envelope.next_attempt(now + countdown), queue=queue)
        return Verdict(State.RETRY, error=error, retry=nxt, countdown=countdown)
    tries = f" after {envelope.retries} retries" if envelope.retries else ""
    reason = f"{error.type}: {error.message}{tries}"
    dead = dead_letter_failures or isinstance(outcome, Rejected)
    return Verdict(State.FAILURE, error=error, dead_reason=reason if dead else None,
                   reason=reason)


def unretryable(verdict: Verdict, problem: str, *, dead_letter_failures: bool = False
                ) -> Verdict:
    """A retry that cannot be published (it cannot be encoded, or the broker refuses it)
    becomes a failure whose reason says so."""
    assert verdict.error is not None
    error = ErrorInfo(verdict.error.type, f"{verdict.error.message} (and the retry could not "
                      f"be sent: {problem})", verdict.error.traceback)
    reason = f"{error.type}: {error.message}"
    return Verdict(State.FAILURE, error=error, reason=reason,
                   dead_reason=reason if dead_letter_failures else None)


def describe(outcome: Outcome, spec: TaskOptions) -> tuple[ErrorInfo, bool, float | None]:
    """The error, whether to retry, and any countdown asked for, for a failed outcome."""
    if isinstance(outcome, Failed):
        return outcome.error, outcome.retry, outcome.countdown
    if isinstance(outcome, Rejected):
        return ErrorInfo(ErrorKind.REJECTED, outcome.reason), False, None
    if isinstance(outcome, Crashed):
        return ErrorInfo(ErrorKind.CRASHED, outcome.reason), spec.on_crash == "retry", None
    if isinstance(outcome, TimedOut):
        error = ErrorInfo(ErrorKind.TIMED_OUT, f"ran past its time limit of {outcome.limit}s")
        return error, False, None
    raise TypeError(f"not a failed outcome: {outcome!r}")
