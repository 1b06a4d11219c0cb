"""Acks, releases, extensions and dead letters on Redis name their deliveries' receipts
packed in one script argument per batch, sent on a head packed once per queue: each still
touches exactly the deliveries it names, and a Redis that forgot the scripts (a restart) has
them loaded again and the call made once."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from hubbub.transports import DeadLetterRequest
from hubbub.transports.redis import RedisTransport
from tests import brokers
from tests.brokers import free_port
from tests.cluster import servers
from tests.transports.test_redis import admin, opened, out, url  # fixtures used here

__all__ = ["admin", "opened", "url"]


async def _held(t: RedisTransport, queue: str = "q") -> int:
    stats = await t.stats([queue])
    return stats[0].leased


async def check_batches_touch_only_what_they_name(t: RedisTransport,
                                                  forget: Any = None) -> None:
    """Runs each batch operation on a mix of deliveries (``forget()`` before each, if
    given) and checks what it did."""
    await t.publish([out(f"m{i}", priority=i % 3) for i in range(8)])
    got = await t.fetch(["q"], limit=8, lease=30, wait=1)
    assert len(got) == 8
    by_body = {d.body: d for d in got}
    d = [by_body[f"m{i}".encode()] for i in range(8)]

    async def step() -> None:
        if forget is not None:
            await forget()

    await step()
    await t.ack([d[0], d[2]])
    await step()
    lost = await t.extend(d, lease=60)  # the two acked are lost, at their places in the batch
    assert [x.body for x in lost] == [b"m0", b"m2"]
    await step()
    await t.dead_letter([DeadLetterRequest(d[3], "bad input, see: a b,c"),
                         DeadLetterRequest(d[5], "second")])
    await step()
    await t.release([d[1], d[4]])
    assert await _held(t) == 2  # m6 and m7
    await step()
    await t.ack([d[6], d[7]])
    assert await _held(t) == 0
    dead = await t.list_dead("q")
    assert sorted((x.body, x.reason) for x in dead) == [
        (b"m3", "bad input, see: a b,c"), (b"m5", "second")]
    again = await t.fetch(["q"], limit=8, lease=30, wait=1)
    assert sorted(x.body for x in again) == [b"m1", b"m4"]
    # a release is not an attempt: each comes back with the count it had
    assert [x.attempts for x in sorted(again, key=lambda x: x.body)] == [d[1].attempts,
                                                                        d[4].attempts]
    await t.ack(again)


async def test_batches_of_receipts_touch_only_the_deliveries_they_name(opened: Any) -> None:
    await check_batches_touch_only_what_they_name(await opened())


async def test_many_receipts_across_script_calls_are_all_acked(opened: Any) -> None:
    t = await opened()
    await t.publish([out(f"m{i}") for i in range(2500)])
    got = []
    while len(got) < 2500:
        got += await t.fetch(["q"], limit=2500 - len(got), lease=60, wait=1)
    assert await t.extend(got, lease=120) == []
    await t.ack(got)
    assert await _held(t) == 0
    assert await t.fetch(["q"], limit=1, lease=60, wait=0) == []


@pytest.fixture
async def own_redis() -> AsyncIterator[str]:
    """A redis-server of this test's own (its scripts may be flushed), killed after it."""
    if shutil.which("redis-server") is None:
        brokers.unavailable("redis-server is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        server = servers.Server(port, servers.redis_args(port), Path(folder))
        server.start()
        try:
            servers.wait(lambda: servers.listening(port), 30, f"redis-server on {port}")
            yield f"redis://{servers.HOST}:{port}/0?prefix=rc"
        finally:
            server.kill()


async def test_a_redis_that_forgot_its_scripts_runs_each_batch_once(own_redis: str) -> None:
    t = RedisTransport(own_redis)
    await t.connect()
    plain = aioredis.Redis.from_url(own_redis.split("?")[0])
    try:
        await check_batches_touch_only_what_they_name(t, plain.script_flush)
    finally:
        await plain.aclose()
        await t.close()
