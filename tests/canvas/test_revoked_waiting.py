"""A step of a chain revoked while it waits for a pool slot (after the worker fetched it):
the worker drops it, and the steps after it fail at once instead of staying PENDING."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub import Hub, State, chain
from hubbub.canvas.nodes import UPSTREAM_FAILED
from hubbub.testing import BackgroundWorker
from hubbub.worker.pools import make_pool
from tests import brokers
from tests.worker.scratch import wait_until


@pytest.fixture(params=["sqlite", "redis"])
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hub]:
    module = brokers.load(request.param)
    brokers.require(module)
    run_id = "rw" + uuid.uuid4().hex[:10]
    url = module.make_url(tmp_path, run_id)
    h = Hub(url, results=module.results_url(tmp_path, run_id), lease=10)
    try:
        yield h
    finally:
        h.close()
        asyncio.run(module.cleanup(url))


def _leased(hub: Hub) -> int:
    async def count() -> int:
        client = await hub.client()
        return sum(s.leased for s in await client.transport.stats(["default"]))

    return hub.bridge.run(count())


def test_the_rest_of_a_chain_fails_when_a_waiting_step_is_revoked(hub: Hub) -> None:
    busy, release = threading.Event(), threading.Event()
    ran: list[int] = []

    @hub.task(name="rw.block")
    def block() -> None:
        busy.set()
        release.wait(30)

    @hub.task(name="rw.step")
    def step(x: int) -> int:
        ran.append(x)
        return x + 1

    with BackgroundWorker(hub, pool=make_pool("threads", 1)):
        block.delay()
        wait_until(busy.is_set, "the only pool slot is taken")
        last = chain(step.s(1), step.s(), step.s()).delay()
        first = last.parent.parent  # type: ignore[union-attr]
        assert first is not None
        wait_until(lambda: _leased(hub) == 2, "the worker holds the chain's first step")
        hub.bridge.run(hub.revoke([first.id]))
        # The rest fails while the slot is still taken: the worker dropped the step.
        wait_until(lambda: last.state == State.FAILURE, "the last step failed", timeout=20)
        assert not release.is_set()
        release.set()
    record = last.record()
    assert record is not None
    assert record.error is not None
    assert record.error.type == UPSTREAM_FAILED
    assert first.state == State.REVOKED
    assert ran == []
