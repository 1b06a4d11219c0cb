"""Unique jobs end to end: a producer and a real worker (in this process, on its own thread)
on memory, SQLite, Redis, and RabbitMQ with its results in Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hubbub import Hub, Limits, Result, State
from hubbub.limits.unique import UNIQUE_FOR_HEADER, UNIQUE_HEADER
from hubbub.message import Envelope
from hubbub.worker.loop import WorkerLoop
from hubbub.worker.pools import Pool, make_pool
from tests.limits.conftest import Place, place_params
from tests.worker.scratch import serving, wait_until


@contextmanager
def worker(hub: Hub, queues: list[str] | None = None, pool: Pool | None = None
           ) -> Iterator[WorkerLoop]:
    """A worker of ``hub`` (default: 4 threads) on its own thread, stopped when the block
    ends."""
    loop_worker = WorkerLoop(hub, queues=queues, pool=pool or make_pool("threads", 4), lease=5)
    with serving(loop_worker) as running:
        yield running


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


def new_job_for(hub: Hub, key: str, holder: str, what: str) -> str:
    """Wait until a send with unique ``key`` (to a queue nobody consumes) makes a new job:
    the key no longer names ``holder``. The new job's id."""
    later: list[str] = []

    def sent_anew() -> bool:
        result = hub.send_task("nobody.runs", queue="parked", unique_key=key, unique_for=600)
        if result.id != holder:
            later.append(result.id)
        return bool(later)

    wait_until(sent_anew, what, timeout=20)
    return later[0]


def holds(hub: Hub, key: str, holder: str) -> bool:
    """Whether unique ``key`` still names job ``holder`` (a send returns its Result)."""
    return hub.send_task("nobody.runs", queue="parked", unique_key=key).id == holder


async def _fetch_and_drop(hub: Hub, queue: str) -> None:
    """Take one delivery from ``queue`` with a short lease and never settle it (a worker
    that died): it comes back as a further delivery."""
    client = await hub.client()
    taken = await client.transport.fetch([queue], limit=1, lease=0.2, wait=5)
    assert len(taken) == 1


@pytest.mark.parametrize("place", place_params("memory", "sqlite", "redis"), indirect=True)
def test_a_unique_job_refused_at_admission_gives_its_key_back_at_once(place: Place) -> None:
    hub = Hub(place.url, results=place.results, lease=5, limits=Limits(max_deliveries=1))
    try:
        @hub.task
        def charge(order_id: int) -> int:
            return order_id

        unknown = hub.send_task("not.registered", unique_key="k:unknown", unique_for=600)
        bad_args = hub.send_task(charge.name, (1, 2, 3), unique_key="k:args", unique_for=600)
        malformed = Envelope(charge.name, (4,), canvas={"bogus": []}, headers={
            UNIQUE_HEADER: "k:canvas", UNIQUE_FOR_HEADER: 600.0})
        [canvas] = hub.publish([malformed])
        poison = charge.apply_async((5,), queue="poison", unique_key="k:poison",
                                    unique_for=600)
        hub.bridge.run(_fetch_and_drop(hub, "poison"))  # its first delivery; the worker's
        # is the second, over max_deliveries=1
        jobs = {"k:unknown": unknown.id, "k:args": bad_args.id, "k:canvas": canvas.id,
                "k:poison": poison.id}
        assert all(holds(hub, key, job) for key, job in jobs.items())  # queued: held
        with worker(hub, queues=["default", "poison"]):
            for key, job in jobs.items():
                new_job_for(hub, key, job, f"{key} given back after its job was refused")
        for result in (unknown, bad_args, canvas, poison):
            assert result.state == State.FAILURE
    finally:
        hub.close()


@pytest.mark.parametrize("place", place_params("memory", "sqlite", "redis"), indirect=True)
def test_a_unique_job_that_expired_or_was_revoked_while_waiting_gives_its_key_back(
        place: Place) -> None:
    hub = Hub(place.url, results=place.results, lease=5)
    try:
        busy = threading.Event()
        release = threading.Event()

        @hub.task
        def block() -> None:
            busy.set()
            release.wait(30)

        @hub.task
        def charge(order_id: int) -> int:
            return order_id

        expired = charge.apply_async((1,), unique_key="k:expired",
                                     expires=datetime.now(UTC) - timedelta(seconds=1))
        pool = make_pool("threads", 1)
        with worker(hub, pool=pool):
            new_job_for(hub, "k:expired", expired.id, "the expired job's key given back")
            block.delay()
            wait_until(busy.is_set, "the only pool slot is taken")
            waiting = charge.apply_async((2,), unique_key="k:revoked", unique_for=600)
            # Fetched and held, waiting for the pool's only slot.
            wait_until(lambda: _leased(hub) == 2, "the worker holds the second job")
            hub.bridge.run(hub.revoke([waiting.id]))
            new_job_for(hub, "k:revoked", waiting.id, "the revoked job's key given back")
            assert not release.is_set()  # while the slot is still taken: at once
            release.set()
        assert expired.state == waiting.state == State.REVOKED
    finally:
        hub.close()


def _leased(hub: Hub) -> int:
    async def count() -> int:
        client = await hub.client()
        return sum(s.leased for s in await client.transport.stats(["default"]))

    return hub.bridge.run(count())
