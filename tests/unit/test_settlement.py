"""Settlement decides retry, backoff and dead letters from an outcome alone: no broker."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubbub.errors import ErrorKind
from hubbub.job import Crashed, Failed, Rejected, Succeeded, Terminated, TimedOut
from hubbub.message import Envelope
from hubbub.results.base import ErrorInfo, State
from hubbub.task import TaskOptions
from hubbub.worker.settlement import MAX_COUNTDOWN, Verdict, backoff, settle, unretryable

NOW = 1_000_000.0
SPEC = TaskOptions("t.work", retries=3, retry_backoff=2.0, retry_backoff_max=60.0,
                   retry_jitter=False)


def envelope(**fields: object) -> Envelope:
    return Envelope("t.work", **{"max_retries": 3, "queue": "default", **fields})  # type: ignore[arg-type]


def failed(countdown: float | None = None, retry: bool = True) -> Failed:
    return Failed(ErrorInfo("ValueError", "boom"), 0.1, retry=retry, countdown=countdown)


def test_success_records_the_value_and_acks() -> None:
    verdict = settle(envelope(), SPEC, Succeeded(41, 0.1), NOW, queue="default")
    assert verdict.state == State.SUCCESS
    assert verdict.value == 41
    assert verdict.retry is None
    assert verdict.dead_reason is None


def test_a_success_verdict_has_every_field_the_verdict_class_would_give_it() -> None:
    # Built field by field (every task's path): nothing differs from the class's defaults.
    verdict = settle(envelope(), SPEC, Succeeded([1, "x"], 0.1), NOW, queue="default")
    assert verdict == Verdict(State.SUCCESS, value=[1, "x"])


def test_a_retryable_failure_is_retried_with_exponential_backoff() -> None:
    verdict = settle(envelope(retries=2), SPEC, failed(), NOW, queue="default")
    assert verdict.state == State.RETRY
    assert verdict.countdown == 8.0  # 2 * 2**2, no jitter
    assert verdict.retry is not None
    assert verdict.retry.retries == 3
    assert verdict.retry.eta == NOW + 8.0


def test_the_last_retry_spent_fails_for_good_without_a_dead_letter() -> None:
    verdict = settle(envelope(retries=3), SPEC, failed(), NOW, queue="default")
    assert verdict.state == State.FAILURE
    assert verdict.reason == "ValueError: boom after 3 retries"
    assert verdict.dead_reason is None  # it ran: dead letters are for what could not


def test_failures_are_dead_lettered_too_when_asked() -> None:
    verdict = settle(envelope(retries=3), SPEC, failed(), NOW, queue="default",
                     dead_letter_failures=True)
    assert verdict.dead_reason == "ValueError: boom after 3 retries"


def test_a_reject_is_always_dead_lettered() -> None:
    verdict = settle(envelope(), SPEC, Rejected("not ours", 0.0), NOW, queue="default")
    assert verdict.dead_reason == "Rejected: not ours"


def test_a_terminated_task_is_revoked_and_neither_retried_nor_dead_lettered() -> None:
    verdict = settle(envelope(), SPEC, Terminated("stopped", 1.0), NOW, queue="default")
    assert verdict.state == State.REVOKED
    assert verdict.retry is None
    assert verdict.dead_reason is None


def test_a_retry_goes_back_to_the_queue_it_came_from_not_the_envelopes() -> None:
    verdict = settle(envelope(queue=""), SPEC, failed(), NOW, queue="mail")
    assert verdict.retry is not None
    assert verdict.retry.queue == "mail"


@pytest.mark.parametrize(("asked", "expected"), [
    (math.inf, MAX_COUNTDOWN), (1e12, MAX_COUNTDOWN), (-5.0, 0.0), (3.0, 3.0),
])
def test_a_countdown_is_clamped_to_what_can_be_held(asked: float, expected: float) -> None:
    verdict = settle(envelope(), SPEC, failed(countdown=asked), NOW, queue="default")
    assert verdict.countdown == expected


def test_a_nan_countdown_falls_back_to_the_tasks_backoff() -> None:
    verdict = settle(envelope(), SPEC, failed(countdown=math.nan), NOW, queue="default")
    assert verdict.countdown == 2.0


def test_negative_retries_grant_no_extra_attempt() -> None:
    verdict = settle(envelope(retries=-5, max_retries=0), SPEC, failed(), NOW, queue="default")
    assert verdict.state == State.FAILURE


@pytest.mark.parametrize(("outcome", "kind"), [
    (Crashed("segfault", 0.1), ErrorKind.CRASHED),
    (TimedOut(5.0, 5.0), ErrorKind.TIMED_OUT),
    (Rejected("not ours", 0.0), ErrorKind.REJECTED),
])
def test_crash_timeout_and_reject_fail_for_good_by_default(outcome: object, kind: str) -> None:
    verdict = settle(envelope(), SPEC, outcome, NOW, queue="default")  # type: ignore[arg-type]
    assert verdict.state == State.FAILURE
    assert verdict.error is not None
    assert verdict.error.type == kind


def test_a_crash_is_retried_when_the_task_says_so() -> None:
    spec = TaskOptions("t.work", retries=1, on_crash="retry")
    verdict = settle(envelope(max_retries=1), spec, Crashed("killed", 0.1), NOW, queue="q")
    assert verdict.state == State.RETRY


def test_a_retry_that_cannot_be_sent_becomes_a_failure_that_says_why() -> None:
    verdict = settle(envelope(), SPEC, failed(), NOW, queue="default")
    failure = unretryable(verdict, "message is too large")
    assert failure.state == State.FAILURE
    assert failure.reason is not None
    assert "retry could not be sent: message is too large" in failure.reason


def test_backoff_is_capped_and_jitter_stays_within_half_and_all() -> None:
    assert backoff(1.0, 10.0, 50, jitter=False) == 10.0
    assert 5.0 <= backoff(1.0, 10.0, 50, jitter=True) <= 10.0


@settings(max_examples=200, deadline=None)
@given(
    retries=st.integers(min_value=-3, max_value=10**6),
    max_retries=st.integers(min_value=0, max_value=10),
    countdown=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    retry=st.booleans(),
    message=st.text(),
)
def test_any_failure_settles_into_a_retry_that_can_be_scheduled_or_a_dead_letter(
    retries: int, max_retries: int, countdown: float | None, retry: bool, message: str,
) -> None:
    outcome = Failed(ErrorInfo("E", message), 0.0, retry=retry, countdown=countdown)
    env = envelope(retries=retries, max_retries=max_retries)
    verdict = settle(env, SPEC, outcome, NOW, queue="q")
    if verdict.state == State.RETRY:
        assert verdict.retry is not None
        assert verdict.retry.eta is not None
        assert math.isfinite(verdict.retry.eta)
        assert 0.0 <= verdict.countdown <= MAX_COUNTDOWN
        assert verdict.retry.queue == "q"
        assert 0 <= retries < max_retries
    else:
        assert verdict.state == State.FAILURE
        assert verdict.reason


def test_a_job_made_from_an_envelope_carries_every_field_by_name() -> None:
    from dataclasses import fields

    from hubbub.job import Job

    env = Envelope("t.work", (1,), {"k": 2}, id="i", queue="q", retries=1, max_retries=2,
                   timeout=3.0, soft_timeout=2.0, parent_id="p", root_id="r", group_id="g",
                   headers={"h": 1})
    job = Job.from_envelope(env)
    for f in fields(Job):
        assert getattr(job, f.name) == getattr(env, f.name), f.name
