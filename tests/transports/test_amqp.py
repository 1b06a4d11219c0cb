"""Behaviour only the RabbitMQ transport has: URL lists, masked passwords, failover and
reconnection, clamped priorities, the delay cascade, prefetch and the queue directory."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from hubbub.errors import (
    ConfigurationError,
    HubbubError,
    MessageRejectedByBroker,
    TransportUnavailable,
)
from hubbub.transports import DeadLetterRequest, Outgoing, open_transport
from hubbub.transports._amqp_topology import (
    H_DIED,
    H_REASON,
    directory_name,
    legacy_dead_name,
    main_name,
    parse_urls,
)
from hubbub.transports.amqp import AMQPTransport
from tests import brokers
from tests.brokers import amqp as server


def out(body: str, queue: str = "q", priority: int = 0, eta: float | None = None) -> Outgoing:
    return Outgoing(queue, body.encode(), uuid.uuid4().hex, priority, eta)


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    brokers.require(server)
    u = server.make_url(tmp_path, "t" + uuid.uuid4().hex[:10])
    try:
        yield u
    finally:
        await server.cleanup(u)


@pytest.fixture
async def opened() -> AsyncIterator[list[AMQPTransport]]:
    transports: list[AMQPTransport] = []
    try:
        yield transports
    finally:
        for t in transports:
            await t.close()


async def connect(opened: list[AMQPTransport], url: str) -> AMQPTransport:
    t = AMQPTransport(url)
    await t.connect()
    opened.append(t)
    return t


def test_url_list_splits_on_semicolons_and_commas_and_keeps_driver_options() -> None:
    urls, options = parse_urls(
        "amqp://u:p@a:5672/v?prefix=shop&heartbeat=5; amqps://u:p@b/v?publish_timeout=3,"
        "amqp://c/?connect_timeout=2"
    )
    assert urls == ["amqp://u:p@a:5672/v?heartbeat=5", "amqps://u:p@b/v", "amqp://c/"]
    assert options == {"prefix": "shop", "publish_timeout": "3", "connect_timeout": "2"}


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("amqp://h/;redis://h/", "not an amqp"),
        ("amqp://h/?prefix=a.b", "prefix"),
        ("amqp://h/?consumer_timeout=long", "bad option"),
        ("amqp://h/?publish_timeout=soon", "bad option"),
    ],
)
def test_malformed_urls_are_configuration_errors(bad: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        AMQPTransport(bad)


def test_consumer_timeout_becomes_the_consumer_argument_in_milliseconds() -> None:
    t = AMQPTransport("amqp://h/?consumer_timeout=7200")
    assert t._consumer_args == {"x-consumer-timeout": 7_200_000}


def test_passwords_never_show_in_repr_or_str() -> None:
    t = open_transport("amqp://app:s3cr%40t@h1:5672/;amqp://app:other-pw@h2/?prefix=x")
    for text in (repr(t), str(t), t.url):
        assert "s3cr" not in text
        assert "other-pw" not in text
    assert "amqp://app:***@h1:5672/" in repr(t)


def test_a_password_holding_at_signs_is_masked_up_to_the_host() -> None:
    t = AMQPTransport("amqp://guest:p@ss@word@rabbit:5672/")
    assert t.url == "amqp://guest:***@rabbit:5672/"
    with pytest.raises(ConfigurationError) as caught:
        AMQPTransport("amqp://guest:p@ss@rabbit/;redis://u:p@w@h/")
    assert "ss@" not in str(caught.value)
    assert "'redis://u:***@h/' is not an amqp://" in str(caught.value)


async def test_unreachable_broker_error_names_the_host_and_masks_the_password() -> None:
    port = brokers.free_port()
    t = AMQPTransport(f"amqp://guest:hunter2@127.0.0.1:{port}/?connect_timeout=0.3")
    with pytest.raises(TransportUnavailable) as caught:
        await t.connect()
    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert all("hunter2" not in f"{e!s} {e!r}" for e in chain)
    assert f"amqp://guest:***@127.0.0.1:{port}/" in str(caught.value)
    await t.close()


async def test_wrong_credentials_are_unavailable_with_the_password_masked(url: str) -> None:
    t = AMQPTransport(url.replace("guest:guest", "guest:not-the-password") + "&connect_timeout=1")
    with pytest.raises(TransportUnavailable) as caught:
        await t.connect()
    assert "not-the-password" not in str(caught.value)
    assert isinstance(caught.value, HubbubError)
    await t.close()


async def test_a_dead_cluster_member_is_skipped_for_the_next_url(
    url: str, opened: list[AMQPTransport]
) -> None:
    cluster = f"amqp://guest:guest@127.0.0.1:{brokers.free_port()}/;{url}"
    t = await connect(opened, cluster)
    await t.publish([out("via the second member")])
    [d] = await t.fetch(["q"], limit=1, lease=30, wait=5)
    assert d.body == b"via the second member"
    await t.ack([d])


async def test_cut_connection_is_reopened_and_the_held_message_comes_back_counted(
    url: str, opened: list[AMQPTransport]
) -> None:
    t = await connect(opened, url)
    await t.publish([out("work")])
    [d] = await t.fetch(["q"], limit=1, lease=30, wait=5)
    assert t._conn is not None
    await t._conn.close()  # the network drops: the broker takes the delivery back
    assert await t.extend([d], lease=30) == [d]
    await t.ack([d])  # lease lost with the connection: a no-op, never an error
    [again] = await t.fetch(["q"], limit=1, lease=30, wait=5)  # reconnects by itself
    assert (again.id, again.attempts) == (d.id, 2)
    await t.ack([again])
    [stats] = await t.stats(["q"])
    assert (stats.ready, stats.leased) == (0, 0)


async def test_priorities_beyond_0_to_9_are_clamped(url: str, opened: list[AMQPTransport]) -> None:
    t = await connect(opened, url)
    for body, priority in [("below", -5), ("nine", 9), ("above", 42), ("zero", 0)]:
        await t.publish([out(body, priority=priority)])
    got = []
    for _ in range(4):
        [d] = await t.fetch(["q"], limit=1, lease=30, wait=5)
        got.append((d.body, d.priority))
        await t.ack([d])
    assert got == [(b"nine", 9), (b"above", 9), (b"below", 0), (b"zero", 0)]


async def test_short_delays_are_exact_to_a_tenth_of_a_second(
    url: str, opened: list[AMQPTransport]
) -> None:
    t = await connect(opened, url)
    await t.publish([out("soon")])
    [d] = await t.fetch(["q"], limit=1, lease=30, wait=5)
    released = time.time()
    await t.release([d], delay=0.35)
    [again] = await t.fetch(["q"], limit=1, lease=30, wait=5)
    waited = time.time() - released
    assert 0.34 <= waited < 1.5
    assert again.attempts == 1
    await t.ack([again])


async def test_far_delays_are_counted_and_purged(url: str, opened: list[AMQPTransport]) -> None:
    t = await connect(opened, url)
    await t.publish([out("next year", eta=time.time() + 365 * 86400),
                     out("in an hour", eta=time.time() + 3600), out("now")])
    [stats] = await t.stats(["q"])
    assert (stats.ready, stats.delayed) == (1, 2)
    assert await t.purge("q") == 3
    [stats] = await t.stats(["q"])
    assert (stats.ready, stats.delayed) == (0, 0)


async def test_fetch_with_limit_one_leaves_the_rest_to_other_workers(
    url: str, opened: list[AMQPTransport]
) -> None:
    busy, idle = await connect(opened, url), await connect(opened, url)
    await busy.publish([out(f"m{i}") for i in range(5)])
    [held] = await busy.fetch(["q"], limit=1, lease=30, wait=5)
    await asyncio.sleep(0.2)  # give the broker time to push more, were it allowed to
    got: list = []
    deadline = time.monotonic() + 5
    while len(got) < 4 and time.monotonic() < deadline:
        got += await idle.fetch(["q"], limit=10, lease=30, wait=0.5)
    assert len(got) == 4
    await idle.ack(got)
    await busy.ack([held])


async def test_a_fresh_transport_finds_queues_and_dead_letters_through_the_directory(
    url: str, opened: list[AMQPTransport]
) -> None:
    first = await connect(opened, url)
    await first.publish([out("a", queue="alpha"), out("b", queue="beta")])
    [d] = await first.fetch(["beta"], limit=1, lease=30, wait=5)
    await first.dead_letter([DeadLetterRequest(d, "bad input")])
    await first.close()  # its idle consumer would otherwise take the requeued message
    fresh = await connect(opened, url)
    assert [(s.queue, s.ready, s.dead) for s in await fresh.stats()] == [
        ("alpha", 1, 0), ("beta", 0, 1)]
    [dead] = await fresh.list_dead()
    assert (dead.queue, dead.reason, dead.body) == ("beta", "bad input", b"b")
    assert await fresh.requeue_dead() == 1
    [back] = await fresh.fetch(["beta"], limit=1, lease=30, wait=5)
    assert (back.id, back.attempts) == (d.id, 1)
    await fresh.ack([back])


async def test_queue_names_amqp_cannot_hold_are_refused_clearly(
    url: str, opened: list[AMQPTransport]
) -> None:
    t = await connect(opened, url)
    with pytest.raises(MessageRejectedByBroker, match="does not suit AMQP") as caught:
        await t.publish([out("x", queue="emails (high)")])
    assert caught.value.queue == "emails (high)"


async def test_prefetched_messages_go_back_uncounted_when_the_consumer_closes(
    url: str, opened: list[AMQPTransport]
) -> None:
    t, other = await connect(opened, url), await connect(opened, url)
    assert await t.fetch(["q"], limit=1, lease=30, wait=0.1) == []  # consumer, prefetch 1
    await other.publish([out("pushed")])
    await asyncio.wait_for(t._arrived.wait(), 5)  # the broker pushed it to the idle consumer
    await t.close()
    [d] = await other.fetch(["q"], limit=1, lease=30, wait=5)
    assert (d.body, d.attempts) == (b"pushed", 1)
    await other.ack([d])


async def test_legacy_dead_letter_queue_is_emptied_into_the_capped_one_on_declare(
    url: str, opened: list[AMQPTransport], caplog: pytest.LogCaptureFixture,
) -> None:
    prefix = url.rsplit("prefix=", 1)[1]
    [first], _ = parse_urls(url)
    async with await aio_pika.connect(first) as conn:  # a dead queue as hubbub 0.2 left it
        channel = await conn.channel()
        legacy = await channel.declare_queue(legacy_dead_name(prefix, "q"), durable=True)
        for ident, died in (("stale", time.time() - 30 * 86400), ("recent", time.time())):
            await channel.default_exchange.publish(aio_pika.Message(
                b"body", message_id=ident, headers={H_REASON: "old", H_DIED: repr(died)},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=legacy.name)
        # the directory names q, so the cleanup finds what this test declared
        directory = await channel.declare_queue(directory_name(prefix), durable=True)
        await channel.default_exchange.publish(aio_pika.Message(b"q"), routing_key=directory.name)
    t = await connect(opened, url)
    with caplog.at_level("WARNING", "hubbub.transports"):
        await t.publish([out("new")])  # declares q: the legacy queue is moved and deleted
    assert [d.id for d in await t.list_dead("q")] == ["recent"]
    [stats] = await t.stats(["q"])
    assert stats.dead == 1
    assert "dropped 1 dead letter(s) of queue 'q': older than the retention" in caplog.text
    other = AMQPTransport(url, dead_max=5)  # other limits: the existing queue is kept
    opened.append(other)
    await other.connect()
    with caplog.at_level("WARNING", "hubbub.transports"):
        await other.publish([out("again")])
    assert "exists with other dead-letter limits" in caplog.text
    [d1, d2] = await other.fetch(["q"], limit=2, lease=30, wait=2)
    await other.dead_letter([DeadLetterRequest(d1, "x"), DeadLetterRequest(d2, "y")])
    assert len(await other.list_dead("q")) == 3


async def test_a_redelivered_message_keeps_the_headers_another_publisher_gave_it(
    url: str, opened: list[AMQPTransport]
) -> None:
    # A redelivery is counted by publishing a copy; the copy used to carry only hubbub's
    # own headers, dropping e.g. a trace context another tool had put on the message.
    t = await connect(opened, url)
    await t.publish([out("declares q")])
    [first] = await t.fetch(["q"], limit=1, lease=30, wait=5)
    await t.ack([first])
    prefix = url.rsplit("prefix=", 1)[1]
    [address], _ = parse_urls(url)
    async with await aio_pika.connect(address) as conn:
        channel = await conn.channel()
        await channel.default_exchange.publish(aio_pika.Message(
            b"traced", message_id="m1", headers={"traceparent": "00-abc-def-01"},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=main_name(prefix, "q"))
    [d] = await t.fetch(["q"], limit=1, lease=30, wait=5)
    assert d.headers["traceparent"] == "00-abc-def-01"
    assert t._conn is not None
    await t._conn.close()  # the broker takes it back: redelivered, counted through a copy
    [again] = await t.fetch(["q"], limit=1, lease=30, wait=5)
    assert (again.id, again.attempts, again.body) == ("m1", 2, b"traced")
    assert again.headers["traceparent"] == "00-abc-def-01"
    await t.ack([again])
