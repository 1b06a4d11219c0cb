from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from typing import Any

from hubbub import Hub, Reject, Retry, current_task
from hubbub.context import maybe_current_task
from hubbub.errors import SoftTimeLimitExceeded
from hubbub.job import Failed, Job, Rejected, Succeeded, TimedOut
from hubbub.task import Task, TaskOptions
from hubbub.worker.execute import failure, on_loop, run_sync


def make_task(hub: Hub, fn: Any, **options: Any) -> Task[Any, Any]:
    return Task(hub, fn, TaskOptions(name="t", **options))


def job(
    *args: Any, soft_timeout: float | None = None, timeout: float | None = None, **kwargs: Any
) -> Job:
    return Job(
        "job-id",
        "t",
        args,
        kwargs,
        queue="q",
        retries=1,
        max_retries=3,
        soft_timeout=soft_timeout,
        timeout=timeout,
        root_id="root-id",
    )


# -- run_sync ---------------------------------------------------------------------------------


def test_a_returned_value_is_a_success(hub: Hub) -> None:
    outcome = run_sync(make_task(hub, lambda x, y: x + y), job(2, y=3))

    assert isinstance(outcome, Succeeded)
    assert outcome.value == 5
    assert outcome.duration >= 0


def test_an_async_task_runs_to_completion_in_the_calling_thread(hub: Hub) -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    outcome = run_sync(make_task(hub, double), job(21))

    assert outcome == Succeeded(42, outcome.duration)


def test_the_task_sees_its_own_context_and_it_is_gone_afterwards(hub: Hub) -> None:
    def whoami() -> list[Any]:
        ctx = current_task()
        return [
            ctx.id,
            ctx.task,
            ctx.retries,
            ctx.max_retries,
            ctx.queue,
            ctx.root_id,
            ctx.is_last_attempt,
        ]

    outcome = run_sync(make_task(hub, whoami), job())

    assert isinstance(outcome, Succeeded)
    assert outcome.value == ["job-id", "t", 1, 3, "q", "root-id", False]
    assert maybe_current_task() is None


def test_retry_is_a_failure_to_retry_after_its_countdown(hub: Hub) -> None:
    def busy() -> None:
        raise Retry(countdown=timedelta(seconds=5), reason="rate limited")

    outcome = run_sync(make_task(hub, busy), job())

    assert isinstance(outcome, Failed)
    assert (outcome.retry, outcome.countdown) == (True, 5.0)
    assert (outcome.error.type, outcome.error.message) == ("Retry", "rate limited")


def test_retry_without_a_countdown_leaves_the_delay_to_the_backoff(hub: Hub) -> None:
    def busy() -> None:
        raise Retry

    outcome = run_sync(make_task(hub, busy), job())

    assert isinstance(outcome, Failed)
    assert (outcome.retry, outcome.countdown, outcome.error.message) == (
        True,
        None,
        "retry requested",
    )


def test_reject_is_rejected_with_its_reason(hub: Hub) -> None:
    def refuse() -> None:
        raise Reject("malformed order")

    outcome = run_sync(make_task(hub, refuse), job())

    assert isinstance(outcome, Rejected)
    assert outcome.reason == "malformed order"


def test_an_exception_in_retry_for_is_retried(hub: Hub) -> None:
    def flaky() -> None:
        raise ConnectionResetError("peer went away")

    outcome = run_sync(make_task(hub, flaky, retry_for=(ConnectionError,)), job())

    assert isinstance(outcome, Failed)
    assert outcome.retry is True
    assert (outcome.error.type, outcome.error.message) == ("ConnectionResetError", "peer went away")


def test_an_exception_outside_retry_for_is_not_retried(hub: Hub) -> None:
    def broken() -> None:
        raise ValueError("bad sku")

    outcome = run_sync(make_task(hub, broken, retry_for=(ConnectionError,)), job())

    assert isinstance(outcome, Failed)
    assert outcome.retry is False
    assert "ValueError: bad sku" in outcome.error.traceback
    assert "in broken" in outcome.error.traceback


def test_any_exception_is_retried_when_retry_for_is_not_given(hub: Hub) -> None:
    def broken() -> None:
        raise ValueError("bad sku")

    outcome = run_sync(make_task(hub, broken), job())

    assert isinstance(outcome, Failed)
    assert outcome.retry is True


def test_system_exit_inside_a_task_is_a_failure_not_an_exit(hub: Hub) -> None:
    def quits() -> None:
        sys.exit(3)

    outcome = run_sync(make_task(hub, quits), job())

    assert isinstance(outcome, Failed)
    assert (outcome.error.type, outcome.error.message, outcome.retry) == ("SystemExit", "3", False)
    assert maybe_current_task() is None


def test_a_return_value_json_cannot_hold_is_a_result_not_encodable_failure(hub: Hub) -> None:
    outcome = run_sync(make_task(hub, lambda: {1, object()}), job())

    assert isinstance(outcome, Failed)
    assert outcome.error.type == "ResultNotEncodable"
    assert "return value cannot be stored as JSON" in outcome.error.message
    assert outcome.retry is False


def test_a_return_value_is_not_checked_when_the_result_is_ignored(hub: Hub) -> None:
    value = {1, 2}

    outcome = run_sync(make_task(hub, lambda: value, ignore_result=True), job())

    assert outcome == Succeeded(value, outcome.duration)


def test_failure_turns_a_retry_into_a_retryable_failure(hub: Hub) -> None:
    outcome = failure(make_task(hub, print), Retry(countdown=2), 0.5)

    assert outcome == Failed(outcome.error, 0.5, retry=True, countdown=2)


def test_failure_turns_a_reject_into_a_rejection(hub: Hub) -> None:
    assert failure(make_task(hub, print), Reject("no"), 0.5) == Rejected("no", 0.5)


# -- on_loop: async def on the running loop, with time limits ------------------------------------


async def test_on_loop_returns_the_value_of_an_async_task(hub: Hub) -> None:
    async def whoami(suffix: str) -> str:
        await asyncio.sleep(0)
        return current_task().id + suffix

    outcome = await on_loop(make_task(hub, whoami), job("!"))

    assert isinstance(outcome, Succeeded)
    assert outcome.value == "job-id!"
    assert maybe_current_task() is None


async def test_on_loop_reports_an_exception_as_a_failure(hub: Hub) -> None:
    async def broken() -> None:
        raise KeyError("missing")

    outcome = await on_loop(make_task(hub, broken, retry_for=(KeyError,)), job())

    assert isinstance(outcome, Failed)
    assert (outcome.error.type, outcome.retry) == ("KeyError", True)


async def test_on_loop_soft_timeout_cancels_the_task_and_reports_soft_time_limit_exceeded(
    hub: Hub,
) -> None:
    cleaned_up = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    outcome = await on_loop(make_task(hub, hangs), job(soft_timeout=0.01))

    assert isinstance(outcome, Failed)
    assert outcome.error.type == SoftTimeLimitExceeded.__name__
    assert "soft time limit (0.01s) exceeded" in outcome.error.message
    assert cleaned_up.is_set()


async def test_on_loop_hard_timeout_reports_timed_out(hub: Hub) -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    outcome = await on_loop(make_task(hub, hangs), job(timeout=0.01))

    assert isinstance(outcome, TimedOut)
    assert outcome.limit == 0.01


async def test_on_loop_times_out_a_task_that_ignores_its_soft_limit(hub: Hub) -> None:
    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.Event().wait()

    outcome = await on_loop(make_task(hub, stubborn), job(soft_timeout=0.01, timeout=0.05))

    assert isinstance(outcome, TimedOut)
    assert outcome.limit == 0.05


async def test_on_loop_enforces_a_hard_limit_shorter_than_the_soft_one(hub: Hub) -> None:
    async def slow() -> str:
        await asyncio.sleep(0.3)  # the task's own work, longer than its hard limit
        return "late"

    outcome = await on_loop(make_task(hub, slow), job(soft_timeout=1.0, timeout=0.02))

    assert isinstance(outcome, TimedOut)
