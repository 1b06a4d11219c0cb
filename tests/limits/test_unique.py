"""Unique jobs end to end: a producer and a real worker (in this process, on its own thread)
on SQLite, Redis, and RabbitMQ with its results in Redis."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from hubbub import Hub, Result, State
from hubbub.worker.loop import WorkerLoop
from hubbub.worker.pools import make_pool
from tests.limits.conftest import Place, place_params
from tests.worker.scratch import wait_until


@contextmanager
def worker(hub: Hub, queues: list[str] | None = None) -> Iterator[WorkerLoop]:
    """A threads-pool worker of ``hub`` on its own thread, stopped when the block ends."""
    loop_worker = WorkerLoop(hub, queues=queues, pool=make_pool("threads", 4), lease=5)
    loop = asyncio.new_event_loop()
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            loop.run_until_complete(loop_worker.run())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield loop_worker
    finally:
        loop.call_soon_threadsafe(loop_worker.stop)
        thread.join(60)
        loop.close()
        assert not thread.is_alive(), "the worker did not stop"
        assert not failed, failed


def state(result: Result[Any]) -> State:
    return result.state


@pytest.fixture
def hub(place: Place) -> Iterator[Hub]:
    h = Hub(place.url, results=place.results, lease=5)
    try:
        yield h
    finally:
        h.close()


@pytest.mark.parametrize("place", place_params(), indirect=True)
def test_a_unique_job_is_sent_once_while_queued_or_running_and_again_after_it_finished(
        hub: Hub) -> None:
    release = threading.Event()

    @hub.task(unique=("order_id",), unique_for=60)
    def charge(order_id: int) -> int:
        release.wait(30)
        return order_id

    first = charge.delay(42)
    assert charge.delay(42).id == first.id  # queued: the same job
    assert charge.delay(43).id != first.id  # another key: another job
    with worker(hub):
        wait_until(lambda: state(first) == State.STARTED, "the first job started")
        again = charge.delay(42)
        assert again.id == first.id  # running: the same job, and its Result works
        release.set()
        assert again.get(timeout=20) == 42
        # The key is given back once the job is settled; then a send is a new job.
        fresh: list[Result[int]] = []

        def new_job() -> bool:
            result = charge.delay(42)
            if result.id != first.id:
                fresh.append(result)
            return bool(fresh)

        wait_until(new_job, "a new job for the key after the first finished", timeout=20)
        assert fresh[0].get(timeout=20) == 42


@pytest.mark.parametrize("place", place_params(), indirect=True)
def test_a_unique_key_is_given_back_after_unique_for_even_while_queued(hub: Hub) -> None:
    @hub.task
    def charge(order_id: int) -> int:
        return order_id

    # Sent to a queue no worker consumes: it stays queued.
    sent = time.monotonic()
    first = charge.apply_async((1,), queue="parked", unique_key="order:1", unique_for=0.5)
    assert charge.apply_async((1,), queue="parked", unique_key="order:1").id == first.id
    later: list[str] = []

    def new_job() -> bool:
        result = charge.apply_async((1,), queue="parked", unique_key="order:1")
        if result.id != first.id:
            later.append(result.id)
        return bool(later)

    wait_until(new_job, "a new job once unique_for passed", timeout=10)
    assert time.monotonic() - sent >= 0.49  # not before unique_for (to the millisecond)


@pytest.mark.parametrize("place", place_params("sqlite", "redis"), indirect=True)
def test_a_retrying_unique_job_keeps_its_key_and_a_revoked_one_gives_it_back(
        hub: Hub) -> None:
    attempts: list[int] = []
    retried = threading.Event()
    go_on = threading.Event()

    @hub.task(unique=("order_id",), retries=1, retry_backoff=0.3, retry_jitter=False)
    def flaky(order_id: int) -> int:
        attempts.append(order_id)
        if len(attempts) == 1:
            retried.set()
            raise RuntimeError("first try fails")
        go_on.wait(30)
        return order_id

    @hub.task(unique=("order_id",))
    def charge(order_id: int) -> int:
        return order_id

    job = flaky.delay(7)
    doomed = charge.delay(8)
    hub.bridge.run(hub.revoke([doomed.id]))
    with worker(hub):
        wait_until(retried.is_set, "the first attempt failed")
        wait_until(lambda: state(job) in (State.RETRY, State.STARTED), "the retry is on")
        assert flaky.delay(7).id == job.id  # still the same job between attempts
        go_on.set()
        assert job.get(timeout=20) == 7
        # The revoked job was skipped by the worker, which gave its key back.
        wait_until(lambda: charge.delay(8).id != doomed.id, "the revoked job's key back",
                   timeout=20)
