"""``AsyncPool.submit``: an ``async def`` job started as one asyncio task of its own, which
the worker settles by a callback (its quick path, as the process pools' ``submit``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hubbub import Hub, current_task
from hubbub.context import maybe_current_task
from hubbub.job import Failed, Job, Succeeded, Terminated
from hubbub.worker.pools.coroutines import AsyncPool


def job(task: str, *args: Any, job_id: str = "job-1") -> Job:
    return Job(job_id, task, args, {}, queue="q")


@pytest.fixture
async def pool(hub: Hub) -> AsyncIterator[AsyncPool]:
    p = AsyncPool(4, block_warning=None)
    await p.start(hub)
    try:
        yield p
    finally:
        await p.stop()


async def test_a_submitted_async_job_resolves_to_its_outcome_and_sees_its_context(
        hub: Hub, pool: AsyncPool) -> None:
    @hub.task(name="whoami")
    async def whoami(suffix: str) -> str:
        await asyncio.sleep(0)
        return current_task().id + suffix

    future = pool.submit(job("whoami", "!"))

    assert future is not None
    outcome = await future
    assert isinstance(outcome, Succeeded)
    assert outcome.value == "job-1!"
    assert maybe_current_task() is None


async def test_a_submitted_job_that_raises_is_a_failure(hub: Hub, pool: AsyncPool) -> None:
    @hub.task(name="broken")
    async def broken() -> None:
        raise ValueError("no")

    future = pool.submit(job("broken"))

    assert future is not None
    outcome = await future
    assert isinstance(outcome, Failed)
    assert outcome.error.type == "ValueError"


async def test_a_sync_job_is_not_submitted_it_goes_the_long_way(hub: Hub,
                                                                 pool: AsyncPool) -> None:
    @hub.task(name="plain")
    def plain() -> int:
        return 1

    assert pool.submit(job("plain")) is None


async def test_a_terminate_stops_a_submitted_job_which_ends_terminated(
        hub: Hub, pool: AsyncPool) -> None:
    started = asyncio.Event()

    @hub.task(name="forever")
    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    future = pool.submit(job("forever"))
    assert future is not None
    await started.wait()

    assert await pool.cancel("job-1", "revoked") is True
    outcome = await future
    assert isinstance(outcome, Terminated)
    assert outcome.reason == "revoked"
    assert await pool.cancel("job-1", "again") is False  # it is forgotten once over


async def test_cancelling_the_future_of_a_submitted_job_cancels_the_job(
        hub: Hub, pool: AsyncPool) -> None:
    started, cleaned = asyncio.Event(), asyncio.Event()

    @hub.task(name="waits")
    async def waits() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    future = pool.submit(job("waits"))
    assert future is not None
    await started.wait()

    future.cancel()  # what the worker does to a job it lets go (a stop, a revoke)
    with pytest.raises(asyncio.CancelledError):
        await future
    assert cleaned.is_set()
    assert await pool.cancel("job-1", "late") is False
