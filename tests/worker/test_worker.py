"""The worker loop with each in-process pool: outcomes, retries, limits, bad input."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from hubbub import (
    Hub,
    Middleware,
    Reject,
    Retry,
    SoftTimeLimitExceeded,
    State,
    TaskFailed,
    TaskRevoked,
    TaskTimedOut,
    current_task,
)
from hubbub.events import TaskSucceeded
from hubbub.testing import drain
from hubbub.transports import Outgoing
from hubbub.worker.pools import make_pool

POOLS = ["solo", "threads", "async"]


def dead_letters(hub: Hub) -> list[Any]:
    async def read() -> list[Any]:
        client = await hub.client()
        return await client.transport.list_dead()

    return hub.bridge.run(read())


def publish_raw(hub: Hub, body: bytes, queue: str = "default") -> None:
    async def send() -> None:
        client = await hub.client()
        await client.transport.publish([Outgoing(queue, body, "raw-id")])

    hub.bridge.run(send())


@pytest.mark.parametrize("pool", POOLS)
def test_each_pool_runs_sync_and_async_tasks_and_stores_results(hub: Hub, pool: str) -> None:
    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    @hub.task
    async def mul(x: int, y: int) -> int:
        await asyncio.sleep(0)
        return x * y

    r1, r2 = add.delay(2, 3), mul.delay(4, 5)
    many = add.delay_many([(1, 1), (2, 2), (3, 3)])
    drain(hub, pool=make_pool(pool))
    assert (r1.get(timeout=5), r2.get(timeout=5)) == (5, 20)
    assert [r.get(timeout=5) for r in many] == [2, 4, 6]
    assert r1.state == State.SUCCESS
    assert r1.successful()


@pytest.mark.parametrize("pool", POOLS)
def test_failing_task_is_retried_with_backoff_then_fails_without_a_dead_letter(
        hub: Hub, pool: str) -> None:
    calls: list[int] = []

    @hub.task(retries=2, retry_backoff=0.05)
    def broken() -> None:
        calls.append(current_task().retries)
        raise ValueError("always")

    result = broken.delay()
    drain(hub, pool=make_pool(pool))
    assert calls == [0, 1, 2]
    with pytest.raises(TaskFailed) as info:
        result.get(timeout=5)
    assert info.value.type == "ValueError"
    assert "always" in info.value.message
    assert "Traceback" in info.value.traceback
    assert dead_letters(hub) == []  # it ran: a FAILURE result, not a message that could not run


def test_failures_are_dead_lettered_too_when_the_hub_asks_for_it(tmp_path: Any) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'both.db'}", dead_letter_failures=True)
    try:
        @hub.task(retries=1, retry_backoff=0.01)
        def broken() -> None:
            raise ValueError("always")

        result = broken.delay()
        drain(hub)
        assert result.state == State.FAILURE
        [letter] = dead_letters(hub)
        assert letter.id == result.id
        assert "ValueError: always after 1 retries" in letter.reason
    finally:
        hub.close()


def test_a_failure_of_a_task_that_keeps_no_result_is_dead_lettered(hub: Hub) -> None:
    @hub.task(ignore_result=True)
    def broken() -> None:
        raise ValueError("nowhere else to keep this")

    broken.delay()
    drain(hub)
    [letter] = dead_letters(hub)
    assert "nowhere else to keep this" in letter.reason


def test_retry_for_limits_which_errors_are_retried(hub: Hub) -> None:
    calls: list[str] = []

    @hub.task(retries=3, retry_backoff=0.01, retry_for=(ConnectionError,))
    def picky(kind: str) -> None:
        calls.append(kind)
        raise ConnectionError() if kind == "net" else KeyError(kind)

    picky.delay("net")
    picky.delay("key")
    drain(hub)
    assert calls.count("net") == 4
    assert calls.count("key") == 1


def test_retry_raised_in_a_task_honours_its_countdown(hub: Hub) -> None:
    seen: list[float] = []

    @hub.task(retries=1)
    def later() -> str:
        seen.append(time.time())
        if current_task().retries == 0:
            raise Retry(countdown=0.5, reason="not yet")
        return "done"

    result = later.delay()
    drain(hub)
    assert result.get(timeout=5) == "done"
    assert seen[1] - seen[0] >= 0.45


def test_reject_dead_letters_without_retrying(hub: Hub) -> None:
    @hub.task(retries=5)
    def refuse() -> None:
        raise Reject("not for us")

    result = refuse.delay()
    drain(hub)
    assert result.state == State.FAILURE
    [letter] = dead_letters(hub)
    assert "not for us" in letter.reason


def test_malformed_message_is_dead_lettered_and_the_worker_goes_on(hub: Hub) -> None:
    @hub.task
    def ok() -> str:
        return "fine"

    publish_raw(hub, b"\x00\xffnot json at all")
    publish_raw(hub, b'{"v": 99, "id": "x"}')
    result = ok.delay()
    drain(hub)
    assert result.get(timeout=5) == "fine"
    reasons = sorted(letter.reason for letter in dead_letters(hub))
    assert any("not JSON" in r for r in reasons)
    assert any("unsupported message version 99" in r for r in reasons)


def test_unknown_task_and_wrong_arguments_are_dead_lettered_with_the_reason(hub: Hub) -> None:
    @hub.task
    def two(a: int, b: int) -> int:
        return a + b

    unknown = hub.send_task("nobody.knows", args=(1,))
    wrong = hub.send_task(two.name, args=(1,))  # delay() would refuse it at the call
    drain(hub)
    reasons = {letter.id: letter.reason for letter in dead_letters(hub)}
    assert "unknown task 'nobody.knows'" in reasons[unknown.id]
    assert "bad arguments" in reasons[wrong.id]
    assert "missing a required argument: 'b'" in reasons[wrong.id]
    with pytest.raises(TaskFailed, match="unknown task"):
        unknown.get(timeout=5)


def test_poison_message_delivered_too_often_is_dead_lettered(hub: Hub, tmp_path: Any) -> None:
    import sqlite3

    @hub.task
    def crashes_its_worker() -> None:
        raise AssertionError("never reached")

    result = crashes_its_worker.delay()
    # As if five workers had died running it: the broker's own delivery counter says so.
    with sqlite3.connect(tmp_path / "hub.db") as conn:
        conn.execute("UPDATE hubbub_messages SET attempts = 5")
    drain(hub)
    [letter] = dead_letters(hub)
    assert letter.id == result.id
    assert "delivered 6 times without finishing" in letter.reason


def test_revoked_task_is_not_run(hub: Hub) -> None:
    ran: list[int] = []

    @hub.task
    def work() -> None:
        ran.append(1)

    result = work.delay()
    result.revoke()
    drain(hub)
    assert ran == []
    assert result.state == State.REVOKED
    with pytest.raises(TaskRevoked):
        result.get(timeout=1)


def test_expired_task_is_revoked_with_the_reason_not_run(hub: Hub) -> None:
    ran: list[int] = []

    @hub.task
    def stale() -> None:
        ran.append(1)

    result = stale.apply_async(countdown=0.3, expires=0.1)
    drain(hub)
    assert ran == []
    with pytest.raises(TaskRevoked, match="expired"):
        result.get(timeout=1)


def test_soft_time_limit_raises_inside_a_thread_task(hub: Hub) -> None:
    @hub.task(soft_timeout=0.2, timeout=5)
    def slow() -> str:
        try:
            while True:  # Python code: the exception lands at the next instruction
                time.sleep(0.01)
        except SoftTimeLimitExceeded:
            return "cleaned up"

    result = slow.delay()
    drain(hub, pool=make_pool("threads", 2))
    assert result.get(timeout=5) == "cleaned up"


def test_soft_time_limit_cancels_an_async_task(hub: Hub) -> None:
    cleaned = threading.Event()

    @hub.task(soft_timeout=0.2)
    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cleaned.set()
            raise

    result = slow.delay()
    drain(hub, pool=make_pool("async"))
    assert cleaned.is_set()
    with pytest.raises(TaskFailed) as info:
        result.get(timeout=5)
    assert info.value.type == "SoftTimeLimitExceeded"


@pytest.mark.parametrize("pool", POOLS)
def test_hard_time_limit_fails_a_task_that_never_returns(hub: Hub, pool: str) -> None:
    @hub.task(timeout=0.3)
    def forever() -> None:
        while True:
            time.sleep(0.01)

    @hub.task(timeout=0.3)
    async def forever_async() -> None:
        await asyncio.sleep(60)

    results = [forever.delay(), forever_async.delay()]
    drain(hub, pool=make_pool(pool, 2 if pool != "solo" else None))
    for result in results:
        with pytest.raises(TaskTimedOut) as info:  # a TaskFailed, and a TimeoutError
            result.get(timeout=5)
        assert info.value.type == "TaskTimedOut"


def test_current_task_knows_its_id_and_parents_are_linked(hub: Hub) -> None:
    seen: dict[str, Any] = {}

    @hub.task
    def child() -> str:
        ctx = current_task()
        seen["child"] = (ctx.id, ctx.parent_id, ctx.root_id)
        return ctx.id

    @hub.task
    def parent() -> str:
        ctx = current_task()
        seen["parent"] = ctx.id
        return child.delay().id

    result = parent.delay()
    drain(hub)
    child_id = result.get(timeout=5)
    assert seen["child"] == (child_id, result.id, result.id)


def test_middleware_wraps_dispatch_and_events_report_outcomes(hub: Hub) -> None:
    order: list[str] = []

    class Trace(Middleware):
        def __init__(self, name: str) -> None:
            self.name = name

        async def around_dispatch(self, ctx: Any, call_next: Any) -> Any:
            order.append(f"{self.name}>")
            outcome = await call_next(ctx)
            order.append(f"<{self.name}")
            return outcome

    hub.middleware.extend([Trace("a"), Trace("b")])
    events: list[Any] = []
    hub.events.subscribe(events.append)
    hub.events.subscribe(lambda e: 1 / 0)  # a broken subscriber is logged and ignored

    @hub.task
    def noop() -> None:
        return None

    noop.delay()
    drain(hub)
    assert order == ["a>", "b>", "<b", "<a"]
    assert any(isinstance(e, TaskSucceeded) for e in events)


def test_worker_holds_no_more_than_free_slots_plus_prefetch(hub: Hub) -> None:
    from hubbub.worker import WorkerLoop

    gate = threading.Event()

    @hub.task
    def blocked() -> None:
        gate.wait(10)

    blocked.delay_many([() for _ in range(20)])
    worker = WorkerLoop(hub, pool=make_pool("threads", 2), prefetch=1, stop_when_idle=True)
    most: list[int] = []

    async def watch() -> None:
        runner = asyncio.create_task(worker.run())
        for _ in range(30):
            await asyncio.sleep(0.02)
            most.append(len(worker._held))
        gate.set()
        await asyncio.wait_for(runner, 30)

    asyncio.run(watch())
    assert max(most) == 3


def test_lease_is_renewed_so_a_long_task_runs_once_with_two_workers(tmp_path: Any) -> None:
    from hubbub.worker import WorkerLoop

    hub = Hub(f"sqlite:///{tmp_path / 'lease.db'}", lease=0.6)
    runs: list[float] = []

    @hub.task
    async def long() -> None:
        runs.append(time.time())
        await asyncio.sleep(2.0)  # more than three leases

    try:
        long.delay()

        async def two_workers() -> None:
            workers = [WorkerLoop(hub, stop_when_idle=True) for _ in range(2)]
            await asyncio.wait_for(asyncio.gather(*(w.run() for w in workers)), 30)

        asyncio.run(two_workers())
        assert len(runs) == 1
    finally:
        hub.close()


def test_a_task_that_blocks_the_loop_past_the_lease_is_reported(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'block.db'}", lease=0.6)

    @hub.task
    async def blocks() -> None:
        time.sleep(1.0)  # wrong in an async task: it stalls the worker's loop

    try:
        blocks.delay()
        with caplog.at_level("ERROR", logger="hubbub.worker"):
            drain(hub)
        assert any("event loop was blocked" in r.message and "blocks" in r.message
                   for r in caplog.records)
    finally:
        hub.close()


def test_a_signing_worker_dead_letters_unsigned_messages_and_runs_signed_ones(
    tmp_path: Any,
) -> None:
    url = f"sqlite:///{tmp_path / 'signed.db'}"
    signed = Hub(url, signing_keys={"k1": "k1-secret-0123456789"})
    unsigned = Hub(url)
    try:
        @signed.task(name="echo")
        def echo(x: int) -> int:
            return x

        good = echo.delay(1)
        bad = unsigned.send_task("echo", args=(2,))
        drain(signed)
        assert good.get(timeout=5) == 1
        [letter] = dead_letters(signed)
        assert letter.id == bad.id
        assert "unsigned message refused" in letter.reason
    finally:
        signed.close()
        unsigned.close()


def test_an_async_task_in_a_thread_is_cancelled_at_its_hard_limit(hub: Hub) -> None:
    ended = threading.Event()

    @hub.task(timeout=0.3)
    async def sleeper() -> None:
        try:
            await asyncio.sleep(60)  # inside select(): an exception raised in the thread
        finally:  # could not reach it, a cancellation does
            ended.set()

    result = sleeper.delay()
    drain(hub, pool=make_pool("threads", 1))
    with pytest.raises(TaskTimedOut):
        result.get(timeout=5)
    assert ended.wait(5), "the task's thread was left sleeping"


def test_a_failure_log_line_masks_the_password_in_the_error(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'leak.db'}")

    @hub.task
    def connects() -> None:
        raise ConnectionError("cannot reach redis://app:hunter2@db.internal:6379/0")

    try:
        connects.delay()
        with caplog.at_level("ERROR", logger="hubbub.worker"):
            drain(hub)
        [line] = [r.getMessage() for r in caplog.records if "connects" in r.getMessage()]
        assert "redis://app:***@db.internal" in line
        assert "hunter2" not in line
    finally:
        hub.close()
