"""The Redis transport's short paths: one message due now is one XADD (from threads and from
the event loop), and a fetch of one queue that blocks has its claim ride behind the XREAD.
Each must keep what the scripts promise: priorities, leases, groups made on demand.
Runs against the shared Redis at 127.0.0.1:6379, each test in its own key prefix."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from hubbub.errors import TransportError, TransportUnavailable
from hubbub.transports._redis_lua import QueueKeys
from hubbub.transports._redis_sync import RedisSyncPublisher, _roundtrip
from hubbub.transports.redis import RedisTransport
from tests.conftest import eventually
from tests.transports.test_redis import (  # fixtures, imported to be used here
    admin,
    connections,
    kill_connections,
    opened,
    out,
    prefix_of,
    url,
)

__all__ = ["admin", "opened", "url"]


async def _has_group(admin: aioredis.Redis, stream: str) -> bool:
    try:
        return bool(await admin.xinfo_groups(stream))
    except ResponseError:  # no such stream
        return False


def _sync(t: RedisTransport) -> RedisSyncPublisher:
    publisher = t.sync_publisher()
    assert isinstance(publisher, RedisSyncPublisher)
    return publisher


async def test_one_message_from_a_thread_is_a_lone_xadd_that_a_claim_adopts_by_priority(
    url: str, opened: Any, admin: aioredis.Redis
) -> None:
    t = await opened()
    publisher = _sync(t)
    await asyncio.to_thread(publisher.publish, [out("low")])  # a new queue: the script
    await asyncio.to_thread(publisher.publish, [out("high", priority=5)])
    keys = QueueKeys.of(prefix_of(url), "q")
    assert await admin.xlen(keys.ready[5]) == 1
    assert not await _has_group(admin, keys.ready[5])  # the short path made the stream
    got = await t.fetch(["q"], limit=2, lease=30, wait=1)
    assert [(d.body, d.priority, d.attempts) for d in got] == [(b"high", 5, 1), (b"low", 0, 1)]
    await t.ack(got)
    assert await admin.xlen(keys.ready[5]) == 0


async def test_one_message_from_the_loop_is_a_lone_xadd_that_a_claim_adopts(
    url: str, opened: Any, admin: aioredis.Redis
) -> None:
    t = await opened()
    await t.publish([out("first")])
    await t.publish([out("second", priority=9)])
    await t.publish([out("later", priority=9, eta=t.clock.time() + 3600)])  # the script
    keys = QueueKeys.of(prefix_of(url), "q")
    assert not await _has_group(admin, keys.ready[9])
    got = await t.fetch(["q"], limit=5, lease=30, wait=1)
    assert [d.body for d in got] == [b"second", b"first"]
    [stats] = await t.stats(["q"])
    assert (stats.ready, stats.delayed, stats.leased) == (0, 1, 2)


async def test_a_closing_consumer_leaves_its_groups_beside_a_stream_without_one(
    url: str, opened: Any, admin: aioredis.Redis
) -> None:
    t = await opened()
    await t.publish([out("x", priority=5)])
    [d] = await t.fetch(["q"], limit=1, lease=30, wait=1)
    await t.ack([d])
    await asyncio.to_thread(_sync(t).publish, [out("unread")])  # priority 0, no group yet
    keys = QueueKeys.of(prefix_of(url), "q")
    assert not await _has_group(admin, keys.ready[0])
    await t.close()
    assert await admin.xinfo_consumers(keys.ready[5], "hubbub") == []
    assert await admin.xlen(keys.ready[0]) == 1  # kept for the next consumer


async def test_the_sync_publisher_reconnects_after_its_connection_is_killed(
    opened: Any, admin: aioredis.Redis
) -> None:
    t = await opened()
    publisher = _sync(t)
    await asyncio.to_thread(publisher.publish, [out("one")])
    await asyncio.to_thread(publisher.publish, [out("two")])
    assert await kill_connections(admin, t.client_name) >= 1
    await asyncio.to_thread(publisher.publish, [out("three")])
    got = await t.fetch(["q"], limit=5, lease=30, wait=1)
    assert sorted(d.body for d in got) == [b"one", b"three", b"two"]


async def test_an_error_reply_to_the_lone_xadd_fails_the_send_and_the_next_one_is_sent(
    opened: Any, admin: aioredis.Redis, url: str
) -> None:
    t = await opened()
    publisher = _sync(t)
    await asyncio.to_thread(publisher.publish, [out("one")])
    stream = QueueKeys.of(prefix_of(url), "q").ready[0]
    await admin.delete(stream)
    await admin.set(stream, "not a stream")
    with pytest.raises(TransportError) as raised:
        await asyncio.to_thread(publisher.publish, [out("lost")])
    assert not isinstance(raised.value, TransportUnavailable)  # retrying would not help
    assert "WRONGTYPE" in str(raised.value)
    assert "\n" not in str(raised.value)
    await admin.delete(stream)
    await asyncio.to_thread(publisher.publish, [out("two")])
    got = await t.fetch(["q"], limit=5, lease=30, wait=1)
    assert [d.body for d in got] == [b"two"]


class _Conn:
    """A connection whose socket hands the reply over in the pieces given."""

    def __init__(self, *pieces: bytes) -> None:
        self._sock = self
        self.pieces = list(pieces)
        self.sent: list[bytes] = []
        self.closed = False

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)

    def recv(self, _size: int) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""

    def disconnect(self) -> None:
        self.closed = True

    def _host_error(self) -> str:
        return "fake:0"


def test_a_reply_that_comes_in_pieces_is_read_whole() -> None:
    conn = _Conn(b"$15", b"\r\n1700000000000", b"-0\r", b"\n")
    _roundtrip(conn, b"packed")
    assert conn.sent == [b"packed"]
    assert conn.pieces == []
    assert not conn.closed


def test_a_connection_closed_before_the_reply_is_a_connection_error() -> None:
    conn = _Conn(b"$15\r\n17000")
    with pytest.raises(RedisConnectionError):
        _roundtrip(conn, b"packed")


async def test_the_sync_publisher_reuses_one_connection_for_one_thread(
    opened: Any, admin: aioredis.Redis
) -> None:
    t = await opened()
    publisher = _sync(t)

    def send_many() -> None:
        for i in range(20):
            publisher.publish([out(str(i))])

    before = len(await connections(admin, t.client_name))
    await asyncio.to_thread(send_many)
    assert len(await connections(admin, t.client_name)) <= before + 2  # the script's, its own


async def test_a_blocked_fetch_gets_the_message_from_the_claim_behind_its_xread(
    url: str, opened: Any, admin: aioredis.Redis, monkeypatch: Any
) -> None:
    consumer, producer = await opened(), await opened()
    await producer.publish([out("warm")])  # the queue exists: its later sends are XADDs
    [warm] = await consumer.fetch(["q"], limit=1, lease=30, wait=1)
    await consumer.ack([warm])
    passes = 0
    claim = consumer._claim

    async def counting(*args: Any) -> Any:
        nonlocal passes
        passes += 1
        return await claim(*args)

    monkeypatch.setattr(consumer, "_claim", counting)
    fetching = asyncio.create_task(consumer.fetch(["q"], limit=1, lease=30, wait=8))
    await eventually(lambda: _blocked_in_xread(admin, consumer.client_name), timeout=5)
    await producer.publish([out("through")])
    [d] = await asyncio.wait_for(fetching, 8)
    assert d.body == b"through"
    assert passes == 1  # the claim before blocking; the message came with the XREAD
    keys = QueueKeys.of(prefix_of(url), "q")
    member = f"{d.priority}/{d.receipt[1]}"
    assert await admin.zscore(keys.leases, member) == d.lease_until  # leased as it says
    assert await producer.fetch(["q"], limit=1, lease=30, wait=0) == []
    await consumer.ack([d])
    assert await admin.zcard(keys.leases) == 0


async def _blocked_in_xread(admin: aioredis.Redis, name: str) -> bool:
    return any(c["cmd"] == "xread" for c in await connections(admin, name))


async def test_a_claim_whose_script_redis_lacks_loads_it_and_still_delivers(
    opened: Any, monkeypatch: Any
) -> None:
    consumer, producer = await opened(), await opened()
    monkeypatch.setitem(consumer._shas, "claim", "0" * 40)  # a SHA Redis has never seen
    await producer.publish([out("first")])
    [d] = await consumer.fetch(["q"], limit=1, lease=30, wait=1)
    assert d.body == b"first"
    fetching = asyncio.create_task(consumer.fetch(["q"], limit=1, lease=30, wait=8))
    await asyncio.sleep(0.2)  # let it block; the test holds either way
    await producer.publish([out("second")])
    [d2] = await asyncio.wait_for(fetching, 8)
    assert d2.body == b"second"
    await consumer.ack([d, d2])
