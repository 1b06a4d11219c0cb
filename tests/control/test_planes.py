"""Every broker's plane keeps the same promises: a bounded broadcast seen from subscribe on.

One body for every broker (memory, SQLite, Redis, RabbitMQ, Beanstalkd through its result
store), as the transport conformance suite is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hubbub import Hub
from hubbub.control.plane import Plane
from hubbub.control.planes import open_plane
from hubbub.errors import ConfigurationError, TransportUnavailable
from tests import brokers
from tests.brokers import free_port
from tests.conftest import Broker
from tests.control.amqp_cleanup import delete_plane_exchanges

OpenPlane = Callable[..., Plane]


@pytest.fixture
async def planes(broker: Broker, tmp_path: Path) -> AsyncIterator[OpenPlane]:
    """Opens connected planes on the test's broker (each its own connection); closes them."""
    opened: list[Plane] = []
    results = broker.results_url or f"sqlite:///{tmp_path / 'results.db'}"

    async def make(maxlen: int = 1000) -> Plane:
        plane = open_plane(broker.url, results, maxlen=maxlen)
        await plane.connect()
        opened.append(plane)
        return plane

    try:
        yield make  # type: ignore[misc]
    finally:
        for plane in opened:
            with contextlib.suppress(Exception):
                await plane.close()
        if broker.name == "amqp":
            await delete_plane_exchanges(broker.url)


async def read_until(sub: object, count: int, timeout: float = 10.0) -> list[bytes]:
    """What ``sub`` reads until it has ``count`` messages or ``timeout`` passed."""
    got: list[bytes] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < count and loop.time() < deadline:
        got += await sub.read(wait=min(0.5, max(0.0, deadline - loop.time())))  # type: ignore[attr-defined]
    return got


async def test_every_subscriber_sees_every_message_in_order_from_subscribe_on(
        planes: OpenPlane) -> None:
    publisher, reader = await planes(), await planes()
    await publisher.publish("events", [b"before"])
    first, second = await reader.subscribe("events"), await publisher.subscribe("events")
    other = await reader.subscribe("control")
    sent = [f"m{i}".encode() for i in range(49)] + [os.urandom(64 * 1024)]  # and a large one
    await publisher.publish("events", sent[:20])
    await publisher.publish("events", sent[20:])
    assert await read_until(first, 50) == sent
    assert await read_until(second, 50) == sent
    assert await first.read(wait=0) == []
    assert await other.read(wait=0.2) == []  # another channel saw nothing


async def test_a_read_with_nothing_to_read_returns_empty_within_its_wait(
        planes: OpenPlane) -> None:
    plane = await planes()
    sub = await plane.subscribe("replies")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await sub.read(wait=0.3) == []
    assert await sub.read(wait=0) == []
    # A bound on correctness (the wait is honoured, not forever), far above any scheduling.
    assert loop.time() - started < 5


async def test_a_waiting_reader_wakes_for_a_message(planes: OpenPlane) -> None:
    publisher, reader = await planes(), await planes()
    sub = await reader.subscribe("control")
    waiting = asyncio.create_task(sub.read(wait=10))
    await asyncio.sleep(0)  # the read is under way before the publish
    await publisher.publish("control", [b"ping"])
    assert await asyncio.wait_for(waiting, 15) == [b"ping"]


async def test_a_lagging_reader_gets_the_newest_messages_and_no_more_than_the_bound(
        planes: OpenPlane) -> None:
    publisher, reader = await planes(maxlen=20), await planes(maxlen=20)
    sub = await reader.subscribe("events")
    sent = [str(i).encode() for i in range(500)]
    for start in range(0, 500, 50):
        await publisher.publish("events", sent[start:start + 50])
    await publisher.publish("events", [b"last"])
    sent.append(b"last")
    got = await read_until(sub, 1, timeout=10)
    while got[-1] != b"last":
        got += await sub.read(wait=5)
    assert got == sent[-len(got):]  # the newest, in order
    # At least the bound; at most about it (Redis trims whole stream nodes of 100 entries).
    assert 20 <= len(got) <= 20 + 200


async def test_a_closed_subscription_refuses_reads_and_planes_close_twice(
        planes: OpenPlane) -> None:
    plane = await planes()
    sub = await plane.subscribe("events")
    await sub.close()
    with pytest.raises(RuntimeError):
        await sub.read(wait=0)
    await plane.close()
    await plane.close()


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:{port}/0?socket_connect_timeout=1",
    "amqp://guest:guest@127.0.0.1:{port}/?connect_timeout=1",
    "sqlite:///{tmp}/no-such-folder/broker.db",
])
async def test_an_unreachable_server_is_one_line_transport_unavailable(
        url: str, tmp_path: Path) -> None:
    plane = open_plane(url.format(port=free_port(), tmp=tmp_path))
    with pytest.raises(TransportUnavailable) as info:
        await plane.connect()
    assert "\n" not in str(info.value)
    assert "guest:guest" not in str(info.value)
    await plane.close()


def test_beanstalkd_without_a_result_store_says_to_configure_one() -> None:
    with pytest.raises(ConfigurationError, match="configure one"):
        open_plane("beanstalk://127.0.0.1:11300", None)
    hub = Hub("beanstalk://127.0.0.1:11300", results="none")
    with pytest.raises(ConfigurationError, match="result store"):
        hub.open_plane()


def test_beanstalkd_carries_its_plane_in_the_result_store(tmp_path: Path) -> None:
    plane = open_plane("beanstalk://127.0.0.1:11300", f"sqlite:///{tmp_path / 'r.db'}")
    assert type(plane).__name__ == "SQLitePlane"
    plane = open_plane("beanstalk://127.0.0.1:11300", "redis://127.0.0.1:6379/0?prefix=x")
    assert type(plane).__name__ == "RedisPlane"


async def test_a_redis_read_whose_cancel_the_driver_swallowed_still_raises_it(
        tmp_path: Path) -> None:
    """redis-py's asyncio client can return from a blocked read as if its block ran out when
    the task was cancelled during it; a reader that loops then read on (a worker's stop
    waited 15 s for its control reader). The swallow is timing-dependent, so here the task
    takes its cancel itself, as the driver does, and reads again: the cancel still counted
    on the task must end that read."""
    redis_broker = brokers.load("redis")
    brokers.require(redis_broker)
    url = redis_broker.make_url(tmp_path, "planecancel")
    plane = open_plane(url, None)
    await plane.connect()
    try:
        sub = await plane.subscribe("control")

        async def reader() -> str:
            # Swallowed, as the driver did; the task still counts the cancel.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)
            try:
                await sub.read(wait=0.2)
            except asyncio.CancelledError:
                return "cancelled"
            return "read on"

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        task.cancel()
        assert await asyncio.wait_for(task, 10) == "cancelled"
    finally:
        await plane.close()
        await redis_broker.cleanup(url)
