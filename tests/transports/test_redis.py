"""Behaviour only the Redis transport and result backend have: URLs, key layout, trimming,
blocking fetches and reconnection. Runs against the shared Redis at 127.0.0.1:6379, each test
in its own key prefix; it kills only connections it named itself."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection

from hubbub._redis import RedisURL
from hubbub.clock import FakeClock
from hubbub.errors import (
    ConfigurationError,
    ResultError,
    ResultUnavailable,
    TransportError,
    TransportUnavailable,
)
from hubbub.results import ResultRecord, State
from hubbub.results.redis import RedisResults
from hubbub.transports import DeadLetterRequest, Outgoing, open_transport
from hubbub.transports._redis_lua import QueueKeys
from hubbub.transports.redis import RedisTransport
from tests import brokers
from tests.brokers import free_port
from tests.brokers import redis as broker
from tests.conftest import eventually
from tests.faults.proxy import Proxy

SECRET = "s3cret-pw"


def out(body: str, queue: str = "q", priority: int = 0, eta: float | None = None) -> Outgoing:
    return Outgoing(queue, body.encode(), uuid.uuid4().hex, priority, eta)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    brokers.require(broker)
    url = broker.make_url(Path("."), "t" + uuid.uuid4().hex[:10])
    try:
        yield url
    finally:
        await broker.cleanup(url)


@pytest.fixture
async def admin() -> AsyncIterator[aioredis.Redis]:
    """A plain client to look at keys and to kill the transports' own connections."""
    brokers.require(broker)
    client = aioredis.Redis(host=broker.HOST, port=broker.PORT)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def opened(url: str) -> AsyncIterator[Callable[[], Awaitable[RedisTransport]]]:
    transports: list[RedisTransport] = []

    async def open_one() -> RedisTransport:
        t = RedisTransport(url)
        await t.connect()
        transports.append(t)
        return t

    try:
        yield open_one
    finally:
        for t in transports:
            await t.close()


def prefix_of(url: str) -> str:
    return RedisURL.parse(url).prefix


async def stream_lengths(admin: aioredis.Redis, url: str, queue: str = "q") -> int:
    keys = QueueKeys.of(prefix_of(url), queue).ready
    return sum([await admin.xlen(k) for k in keys])


async def kill_connections(admin: aioredis.Redis, name: str) -> int:
    """CLIENT KILL every connection called ``name`` (by id and type), and only those."""
    killed = 0
    for kind in ("normal", "pubsub"):
        for client in await admin.client_list(_type=kind):
            if client["name"] == name:
                killed += await admin.execute_command(
                    "CLIENT", "KILL", "ID", client["id"], "TYPE", kind, "SKIPME", "yes")
    return killed


async def connections(admin: aioredis.Redis, name: str) -> list[dict[str, Any]]:
    return [c for kind in ("normal", "pubsub") for c in await admin.client_list(_type=kind)
            if c["name"] == name]


# --- URLs -----------------------------------------------------------------------------------


def test_url_gives_host_port_db_prefix_and_password() -> None:
    config = RedisURL.parse(f"redis://:{SECRET}@127.0.0.1:6380/3?prefix=shop&socket_timeout=2.5")
    assert (config.host, config.port, config.db, config.prefix) == ("127.0.0.1", 6380, 3, "shop")
    assert (config.password, config.username, config.tls) == (SECRET, None, False)
    assert config.options["socket_timeout"] == 2.5


def test_url_defaults_and_db_from_the_query() -> None:
    config = RedisURL.parse("redis://cache?db=4")
    assert (config.host, config.port, config.db, config.prefix) == ("cache", 6379, 4, "hubbub")


def test_rediss_url_turns_on_tls_with_its_options() -> None:
    config = RedisURL.parse(
        f"rediss://app:{SECRET}@redis.internal:6380/0?ssl_cert_reqs=none"
        "&ssl_ca_certs=/etc/ca.pem&ssl_certfile=/etc/c.pem&ssl_keyfile=/etc/k.pem"
        "&ssl_check_hostname=false"
    )
    assert config.tls
    assert config.username == "app"
    pool = config.client(name="x").connection_pool
    assert pool.connection_class is SSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["ssl_cert_reqs"], kwargs["ssl_ca_certs"], kwargs["ssl_certfile"],
            kwargs["ssl_keyfile"], kwargs["ssl_check_hostname"]) == (
        "none", "/etc/ca.pem", "/etc/c.pem", "/etc/k.pem", False)


def test_tls_options_need_a_rediss_url() -> None:
    with pytest.raises(ConfigurationError, match="rediss://"):
        RedisURL.parse("redis://127.0.0.1/0?ssl_cert_reqs=none")


def test_unknown_option_fails_with_a_suggestion_and_without_the_password() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'prefix'") as caught:
        RedisURL.parse(f"redis://:{SECRET}@127.0.0.1/0?prefx=shop")
    assert SECRET not in str(caught.value)
    assert "redis://***@127.0.0.1/0?prefx=shop" in str(caught.value)


def test_an_unknown_secret_looking_option_is_not_shown_in_the_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown redis URL option 'password'") as caught:
        RedisURL.parse(f"redis://127.0.0.1/0?password={SECRET}")
    assert SECRET not in str(caught.value)


def test_bad_number_fails_without_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisURL.parse(f"redis://:{SECRET}@127.0.0.1/zero")
    assert SECRET not in str(caught.value)


def test_a_password_that_breaks_the_url_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigurationError, match="percent-encode") as caught:
        RedisURL.parse("redis://user:Xq7/Zk9#Vb2?Np4@127.0.0.1:6379/0")
    assert all(part not in str(caught.value) for part in ("Xq7", "Zk9", "Vb2", "Np4"))


@pytest.mark.parametrize("password", [SECRET, "p@ss:w%rd"])
def test_password_appears_in_no_repr_or_str(password: str) -> None:
    url = f"redis://user:{quote(password, safe='')}@127.0.0.1:6379/0?prefix=p"
    assert RedisURL.parse(url).password == password
    for thing in (RedisTransport(url), RedisResults(url), RedisURL.parse(url)):
        assert password not in repr(thing)
        assert password not in str(thing)
        assert "user:***@127.0.0.1" in repr(thing) + str(thing)


# --- errors at the boundary -----------------------------------------------------------------


async def test_unreachable_server_is_transport_unavailable_without_the_password() -> None:
    port = free_port()
    t = RedisTransport(f"redis://:{SECRET}@127.0.0.1:{port}/0?prefix=x")
    started = time.monotonic()
    with pytest.raises(TransportUnavailable) as caught:
        await t.connect()
    assert str(caught.value).startswith(f"redis at 127.0.0.1:{port} refused")
    assert SECRET not in str(caught.value)
    assert time.monotonic() - started < 5
    await t.close()


async def test_unreachable_server_is_result_unavailable_for_the_result_backend() -> None:
    port = free_port()
    r = RedisResults(f"redis://:{SECRET}@127.0.0.1:{port}/0?prefix=x")
    with pytest.raises(ResultUnavailable, match=f"redis at 127.0.0.1:{port} refused") as caught:
        await r.connect()
    assert isinstance(caught.value, ResultError)
    assert isinstance(caught.value, ConnectionError)
    assert SECRET not in str(caught.value)
    await r.close()


async def test_a_result_store_cut_off_after_connecting_is_result_unavailable(url: str) -> None:
    with Proxy((broker.HOST, broker.PORT)) as proxy:
        r = RedisResults(url.replace(f"{broker.HOST}:{broker.PORT}", proxy.address))
        await r.connect()
        try:
            await r.store([ResultRecord("a", State.SUCCESS, value=1)], ttl=60)
            assert (await r.get(["a"]))["a"].value == 1
            proxy.cut()
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: r.store([ResultRecord("b", State.SUCCESS)], ttl=60),
                lambda: r.get(["a"]),
                lambda: r.wait("a", timeout=5),
                lambda: r.forget(["a"]),
            ]
            for call in calls:
                with pytest.raises(ResultUnavailable, match=f"redis at {proxy.address}"):
                    await asyncio.wait_for(call(), 10)
        finally:
            await r.close()


async def test_other_redis_failures_are_result_errors_but_not_unavailable(
    url: str, results: RedisResults, admin: aioredis.Redis
) -> None:
    await admin.set(f"{prefix_of(url)}:result:odd", "not a hash")
    with pytest.raises(ResultError, match=r"failed: .*WRONGTYPE") as caught:
        await results.get(["odd"])
    assert not isinstance(caught.value, ResultUnavailable)
    login = RedisResults(url.replace("redis://", f"redis://nobody:{SECRET}@"))
    with pytest.raises(ResultError, match="rejected the login") as caught:
        await login.connect()
    assert not isinstance(caught.value, ResultUnavailable)
    assert SECRET not in str(caught.value)
    await login.close()


async def test_wrong_credentials_are_a_transport_error_not_a_redis_one(url: str) -> None:
    t = RedisTransport(url.replace("redis://", f"redis://nobody:{SECRET}@"))
    with pytest.raises(TransportError, match="rejected the login") as caught:
        await t.connect()
    assert not isinstance(caught.value, TransportUnavailable)
    assert SECRET not in str(caught.value)
    await t.close()


async def test_using_a_transport_before_connect_says_so(url: str) -> None:
    with pytest.raises(TransportError, match="call connect"):
        await RedisTransport(url).publish([out("x")])


# --- layout and trimming --------------------------------------------------------------------


async def test_every_key_of_a_queue_shares_its_hash_tag(
    url: str, opened: Any, admin: aioredis.Redis
) -> None:
    t = await opened()
    await t.publish([out("a", "orders"), out("b", "orders", priority=7),
                     out("c", "orders", eta=time.time() + 60), out("d", "mail")])
    [d] = await t.fetch(["orders"], limit=1, lease=30, wait=1)
    await t.dead_letter([DeadLetterRequest(d, "bad")])
    prefix = prefix_of(url)
    keys = {k.decode() async for k in admin.scan_iter(match=f"*{prefix}*")}
    assert f"{prefix}:queues" in keys
    per_queue = keys - {f"{prefix}:queues"}
    assert per_queue
    assert all(k.startswith((f"{{{prefix}:orders}}:", f"{{{prefix}:mail}}:")) for k in per_queue)


async def test_acked_released_and_dead_entries_leave_their_stream(
    url: str, opened: Any, admin: aioredis.Redis
) -> None:
    t = await opened()
    await t.publish([out(f"m{i}", priority=i % 3) for i in range(30)])
    got = await t.fetch(["q"], limit=30, lease=30, wait=1)
    assert len(got) == 30
    assert await stream_lengths(admin, url) == 30
    await t.ack(got[:20])
    assert await stream_lengths(admin, url) == 10
    await t.release(got[20:25])  # re-added as 5 new entries, old ones deleted
    await t.dead_letter([DeadLetterRequest(d, "no") for d in got[25:]])
    assert await stream_lengths(admin, url) == 5
    assert await admin.xlen(QueueKeys.of(prefix_of(url), "q").dead) == 5
    again = await t.fetch(["q"], limit=10, lease=30, wait=1)
    await t.ack(again)
    assert await stream_lengths(admin, url) == 0
    assert await admin.hlen(QueueKeys.of(prefix_of(url), "q").held) == 0


async def test_a_big_publish_keeps_its_order_across_script_calls(opened: Any) -> None:
    t = await opened()
    items = [out(f"m{i}") for i in range(2500)]
    await t.publish(items)
    got = []
    while len(got) < len(items):
        batch = await t.fetch(["q"], limit=1000, lease=30, wait=1)
        assert batch
        got += batch
    assert [d.id for d in got] == [i.id for i in items]
    await t.ack(got)
    assert [(s.ready, s.leased) for s in await t.stats(["q"])] == [(0, 0)]


async def test_purge_counts_ready_and_delayed_and_spares_live_leases(opened: Any) -> None:
    t = await opened()
    await t.publish([out("a"), out("b"), out("c", priority=5), out("d", eta=time.time() + 60)])
    [held] = await t.fetch(["q"], limit=1, lease=30, wait=1)
    assert await t.purge("q") == 3
    [stats] = await t.stats(["q"])
    assert (stats.ready, stats.delayed, stats.leased) == (0, 0, 1)
    await t.ack([held])


async def test_priorities_out_of_range_are_clamped(opened: Any) -> None:
    t = await opened()
    await t.publish([out("low", priority=-3), out("top", priority=42), out("nine", priority=9)])
    got = await t.fetch(["q"], limit=3, lease=30, wait=1)
    assert [(d.body, d.priority) for d in got] == [(b"top", 9), (b"nine", 9), (b"low", 0)]


async def test_stats_of_no_queue_lists_every_queue_under_the_prefix(opened: Any) -> None:
    t = await opened()
    await t.publish([out("a", "b-queue"), out("b", "a-queue"), out("c", "a-queue")])
    assert [(s.queue, s.ready) for s in await t.stats()] == [("a-queue", 2), ("b-queue", 1)]


async def test_a_closing_consumer_that_holds_nothing_leaves_the_group(
    url: str, opened: Any, admin: aioredis.Redis
) -> None:
    t = await opened()
    await t.publish([out("x")])
    [d] = await t.fetch(["q"], limit=1, lease=30, wait=1)
    await t.ack([d])
    stream = QueueKeys.of(prefix_of(url), "q").ready[0]
    assert [c["name"].decode() for c in await admin.xinfo_consumers(stream, "hubbub")] == [
        t.consumer]
    await t.close()
    assert await admin.xinfo_consumers(stream, "hubbub") == []


async def test_reclaiming_an_expired_lease_drops_the_consumer_that_lost_it(
    url: str, opened: Any, admin: aioredis.Redis
) -> None:
    first, second = await opened(), await opened()
    await first.publish([out("x")])
    [stale] = await first.fetch(["q"], limit=1, lease=0.2, wait=1)
    [fresh] = await second.fetch(["q"], limit=1, lease=30, wait=3)
    assert (fresh.id, fresh.attempts) == (stale.id, 2)
    stream = QueueKeys.of(prefix_of(url), "q").ready[0]
    consumers = await admin.xinfo_consumers(stream, "hubbub")
    assert [c["name"].decode() for c in consumers] == [second.consumer]
    await first.release([stale])  # not its lease any more: nothing happens
    assert await stream_lengths(admin, url) == 1
    await second.ack([fresh])


# --- blocking fetch -------------------------------------------------------------------------


async def test_an_idle_fetch_blocks_in_redis_instead_of_polling(
    opened: Any, admin: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = await opened()
    passes = 0
    claim = t._claim

    async def counting(*args: Any) -> Any:
        nonlocal passes
        passes += 1
        return await claim(*args)

    monkeypatch.setattr(t, "_claim", counting)
    fetching = asyncio.create_task(t.fetch(["q", "other"], limit=5, lease=30, wait=1.5))
    await eventually(lambda: _blocked_in_xread(admin, t.client_name), timeout=5)
    assert await fetching == []
    assert passes <= 2


async def _blocked_in_xread(admin: aioredis.Redis, name: str) -> bool:
    return any(c["cmd"] == "xread" for c in await connections(admin, name))


async def test_a_waiting_fetch_wakes_for_any_of_its_queues(opened: Any) -> None:
    consumer, producer = await opened(), await opened()
    fetching = asyncio.create_task(consumer.fetch(["a", "b"], limit=5, lease=30, wait=8))
    await asyncio.sleep(0.2)  # let it block; the test holds either way
    started = time.monotonic()
    await producer.publish([out("hi", "b")])
    [d] = await asyncio.wait_for(fetching, 8)
    assert (d.queue, d.body) == ("b", b"hi")
    assert time.monotonic() - started < 2


async def test_a_waiting_fetch_wakes_for_a_message_delayed_after_it_blocked(
    opened: Any,
) -> None:
    consumer, producer = await opened(), await opened()
    fetching = asyncio.create_task(consumer.fetch(["q"], limit=1, lease=30, wait=8))
    await asyncio.sleep(0.2)
    eta = time.time() + 0.5
    await producer.publish([out("soon", eta=eta)])
    [d] = await asyncio.wait_for(fetching, 8)
    assert d.body == b"soon"
    assert eta - 0.05 <= time.time() < eta + 2


# --- reconnection ---------------------------------------------------------------------------


async def test_transport_reconnects_after_its_connections_are_killed(
    opened: Any, admin: aioredis.Redis
) -> None:
    t = await opened()
    await t.publish([out("before")])
    assert await kill_connections(admin, t.client_name) >= 1
    await t.publish([out("after")])
    got = await t.fetch(["q"], limit=2, lease=30, wait=1)
    assert sorted(d.body for d in got) == [b"after", b"before"]


async def test_a_fetch_blocked_when_its_connection_dies_still_gets_the_message(
    opened: Any, admin: aioredis.Redis
) -> None:
    consumer, producer = await opened(), await opened()
    fetching = asyncio.create_task(consumer.fetch(["q"], limit=1, lease=30, wait=8))
    await eventually(lambda: _blocked_in_xread(admin, consumer.client_name), timeout=5)
    assert await kill_connections(admin, consumer.client_name) >= 1
    await producer.publish([out("through")])
    try:
        got = await asyncio.wait_for(fetching, 8)
    except TransportUnavailable:  # acceptable: the worker retries; never a redis exception
        got = await consumer.fetch(["q"], limit=1, lease=30, wait=3)
    assert [d.body for d in got] == [b"through"]


# --- results --------------------------------------------------------------------------------


@pytest.fixture
async def results(url: str) -> AsyncIterator[RedisResults]:
    backend = RedisResults(url)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.close()


async def test_results_expire_in_redis_itself(
    url: str, results: RedisResults, admin: aioredis.Redis
) -> None:
    await results.store([ResultRecord("a", State.SUCCESS)], ttl=30)
    await results.store([ResultRecord("b", State.SUCCESS)], ttl=None)
    prefix = prefix_of(url)
    assert 0 < await admin.pttl(f"{prefix}:result:a") <= 30_000
    assert await admin.pttl(f"{prefix}:result:b") == -1


async def test_many_waits_share_one_notification_connection(
    results: RedisResults, admin: aioredis.Redis
) -> None:
    ids = [f"w{i}" for i in range(50)]
    waiting = [asyncio.create_task(results.wait(i, timeout=10)) for i in ids]
    await eventually(lambda: _subscribed(admin, results.client_name, len(ids)), timeout=5)
    listening = [c for c in await connections(admin, results.client_name) if int(c["sub"])]
    assert len(listening) == 1
    await results.store([ResultRecord(i, State.SUCCESS, value=i) for i in ids], ttl=60)
    done = await asyncio.wait_for(asyncio.gather(*waiting), 10)
    assert [r.value for r in done if r is not None] == ids
    await eventually(lambda: _subscribed(admin, results.client_name, 0), timeout=5)


async def _subscribed(admin: aioredis.Redis, name: str, n: int) -> bool:
    return any(int(c["sub"]) == n for c in await connections(admin, name))


async def test_a_wait_survives_its_notification_connection_being_killed(
    results: RedisResults, admin: aioredis.Redis
) -> None:
    waiting = asyncio.create_task(results.wait("k", timeout=10))
    await eventually(lambda: _subscribed(admin, results.client_name, 1), timeout=5)
    assert await kill_connections(admin, results.client_name) >= 1
    await eventually(lambda: _subscribed(admin, results.client_name, 1), timeout=5)
    started = time.monotonic()
    await results.store([ResultRecord("k", State.SUCCESS, value=7)], ttl=60)
    record = await asyncio.wait_for(waiting, 10)
    assert record is not None
    assert record.value == 7
    assert time.monotonic() - started < 2


async def test_redis_urls_open_redis_plugins(url: str) -> None:
    assert isinstance(open_transport(url), RedisTransport)
    assert isinstance(open_transport(url.replace("redis://", "rediss://")), RedisTransport)


async def test_dead_letters_past_the_cap_are_trimmed_from_the_stream_and_logged(
    url: str, admin: aioredis.Redis, caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(time.time())
    t = RedisTransport(url + "&dead_max=2&dead_ttl=60", clock=clock)
    await t.connect()
    try:
        await t.publish([out(f"m{i}") for i in range(4)])
        got = await t.fetch(["q"], limit=4, lease=30, wait=1)
        assert len(got) == 4
        await t.dead_letter([DeadLetterRequest(got[0], "first")])
        clock.advance(61)  # the first is now past the retention
        with caplog.at_level("WARNING", "hubbub.transports"):
            await t.dead_letter([DeadLetterRequest(d, "later") for d in got[1:]])
        dead_key = QueueKeys.of(t.config.prefix, "q").dead
        assert await admin.xlen(dead_key) == 2
        assert [d.id for d in await t.list_dead("q")] == [d.id for d in got[2:]]
        assert "dropped 1 dead letter(s) of queue 'q': over the cap of 2" in caplog.text
        assert "dropped 1 dead letter(s) of queue 'q': older than the retention" in caplog.text
    finally:
        await t.close()
