"""Behaviour only the Beanstalkd transport has: URLs, tube names, the job-size cap, TTR
renewal, connections that wait without blocking acks, and a server that goes away."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import greenstalk  # type: ignore[import-untyped]
import pytest

from hubbub.clock import FakeClock
from hubbub.errors import ConfigurationError, MessageRejectedByBroker, TransportUnavailable
from hubbub.transports import DeadLetterRequest, Outgoing, open_transport
from hubbub.transports.beanstalk import BeanstalkTransport
from tests import brokers
from tests.brokers import beanstalk as server
from tests.brokers.beanstalk import OwnServer


def out(body: bytes | str, queue: str = "q", priority: int = 0) -> Outgoing:
    data = body.encode() if isinstance(body, str) else body
    return Outgoing(queue, data, uuid.uuid4().hex, priority)


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    brokers.require(server)
    u = server.make_url(tmp_path, "t" + uuid.uuid4().hex[:10])
    try:
        yield u
    finally:
        await server.cleanup(u)


@pytest.fixture
async def opened(url: str) -> AsyncIterator[list[BeanstalkTransport]]:
    transports: list[BeanstalkTransport] = []
    try:
        yield transports
    finally:
        for t in transports:
            await t.close()


async def connect(opened: list[BeanstalkTransport], url: str) -> BeanstalkTransport:
    t = BeanstalkTransport(url)
    await t.connect()
    opened.append(t)
    return t


@pytest.fixture
def own_server() -> Iterator[OwnServer]:
    s = OwnServer()
    try:
        s.start()
        yield s
    finally:
        s.kill()


def test_url_gives_host_port_prefix_and_ttr() -> None:
    t = BeanstalkTransport("beanstalk://127.0.0.1:11301/?prefix=shop&ttr=2.5")
    assert (t.host, t.port, t.prefix, t.ttr) == ("127.0.0.1", 11301, "shop", 3)
    d = BeanstalkTransport("beanstalk://localhost")
    assert (d.port, d.prefix, d.ttr) == (11300, "hubbub", 5)


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("beanstalk://h/?prefix=a.b", "prefix"),
        ("beanstalk://h/?prefix=", "prefix"),
        ("beanstalk://h/?ttr=soon", "bad beanstalk URL"),
        ("beanstalk://h/?publish_timeout=soon", "bad beanstalk URL"),
        ("beanstalk://h/?tube=x", "unknown beanstalk URL option 'tube' (known: prefix, ttr,"),
        ("beanstalk://h/?tttr=9", "unknown beanstalk URL option 'tttr' (did you mean 'ttr'?)"),
        ("beanstalk://h:notaport/", "bad beanstalk URL"),
    ],
)
def test_malformed_urls_are_configuration_errors(bad: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(says)):
        BeanstalkTransport(bad)


def test_user_info_never_shows_in_repr() -> None:
    t = open_transport("beanstalk://me:secret@127.0.0.1:11300/?prefix=x")
    assert "secret" not in repr(t)
    assert "secret" not in t.url
    assert repr(t) == "BeanstalkTransport('beanstalk://127.0.0.1:11300/?prefix=x')"


async def test_queue_names_beyond_tube_characters_round_trip(
    url: str, opened: list[BeanstalkTransport]
) -> None:
    t = await connect(opened, url)
    name = "emails: high/priorité $1"
    await t.publish([out("x", queue=name)])
    assert [s.queue for s in await t.stats()] == [name]
    [d] = await t.fetch([name], limit=1, lease=5, wait=2)
    assert d.queue == name
    await t.ack([d])


async def test_priorities_beyond_0_to_9_are_clamped(
    url: str, opened: list[BeanstalkTransport]
) -> None:
    t = await connect(opened, url)
    for body, priority in [("below", -5), ("nine", 9), ("above", 42), ("zero", 0)]:
        await t.publish([out(body, priority=priority)])
    got = await t.fetch(["q"], limit=4, lease=5, wait=2)
    assert [(d.body, d.priority) for d in got] == [
        (b"nine", 9), (b"above", 9), (b"below", 0), (b"zero", 0)]
    await t.ack(got)


async def test_job_larger_than_the_server_cap_is_refused_before_sending(
    own_server: OwnServer, opened: list[BeanstalkTransport]
) -> None:
    url = f"beanstalk://127.0.0.1:{own_server.port}/?prefix=big"
    t = await connect(opened, url)
    assert t.max_job_size == 65_535 == t.capabilities.max_message_size  # beanstalkd's default
    with pytest.raises(MessageRejectedByBroker, match=r"up to 65535 bytes \(its -z option\)"):
        await t.publish([out(b"small"), out(b"x" * 70_000)])
    [stats] = await t.stats(["q"])
    assert stats.ready == 0, "a batch with a too-large job must publish nothing"
    await t.publish([out(b"x" * 65_000)])  # under the cap, framing included


async def test_cap_follows_the_servers_z_option(
    url: str, opened: list[BeanstalkTransport]
) -> None:
    t = await connect(opened, url)  # scripts/test.sh starts the shared server with -z 1 MiB
    with greenstalk.Client((server.HOST, server.PORT)) as client:  # ask with another client
        limit = int(client.stats()["max-job-size"])
    assert t.max_job_size == limit
    with pytest.raises(MessageRejectedByBroker):
        await t.publish([out(b"x" * (limit + 1))])


async def test_lease_longer_than_ttr_is_kept_alive_by_touching(
    url: str, opened: list[BeanstalkTransport]
) -> None:
    holder = await connect(opened, url + "&ttr=1")
    other = await connect(opened, url)
    await holder.publish([out("long")])
    [d] = await holder.fetch(["q"], limit=1, lease=2.5, wait=2)
    started = time.monotonic()
    # Three TTRs pass while the holder does nothing: its own touches keep the job.
    while time.monotonic() - started < 2.2:
        assert await other.fetch(["q"], limit=1, lease=5, wait=0.5) == []
    # Unrenewed, the lease ends and the job comes back within lease + ttr.
    [again] = await other.fetch(["q"], limit=1, lease=5, wait=4)
    assert again.id == d.id
    assert time.monotonic() - started < 2.5 + 1 + 1.5
    assert await holder.extend([d], lease=5) == [d]


async def test_waiting_fetch_does_not_hold_up_acks_on_the_same_transport(
    url: str, opened: list[BeanstalkTransport]
) -> None:
    t = await connect(opened, url)
    await t.publish([out("first")])
    [d] = await t.fetch(["q"], limit=1, lease=30, wait=2)
    waiting = asyncio.create_task(t.fetch(["other"], limit=1, lease=30, wait=3))
    await asyncio.sleep(0.2)  # let the fetch start waiting in the broker
    started = time.monotonic()
    await t.ack([d])
    assert time.monotonic() - started < 0.3
    assert not waiting.done()
    assert await waiting == []
    [stats] = await t.stats(["q"])
    assert (stats.ready, stats.leased) == (0, 0)


async def test_requeued_dead_letter_starts_counting_attempts_again(
    url: str, opened: list[BeanstalkTransport]
) -> None:
    t = await connect(opened, url)
    await t.publish([out("poison", priority=7)])
    [d] = await t.fetch(["q"], limit=1, lease=30, wait=2)
    await t.release([d])
    [d] = await t.fetch(["q"], limit=1, lease=30, wait=2)
    await t.close()  # a crash: the next holder sees attempt 2
    t2 = await connect(opened, url)
    [d] = await t2.fetch(["q"], limit=1, lease=30, wait=2)
    assert d.attempts == 2
    await t2.dead_letter([DeadLetterRequest(d, "crashed twice")])
    assert [x.reason for x in await t2.list_dead()] == ["crashed twice"]
    assert await t2.requeue_dead() == 1
    [again] = await t2.fetch(["q"], limit=1, lease=30, wait=2)
    assert (again.id, again.attempts, again.priority) == (d.id, 1, 7)
    await t2.ack([again])
    [stats] = await t2.stats(["q"])
    assert (stats.ready, stats.leased, stats.dead) == (0, 0, 0)


async def test_broker_that_goes_away_and_comes_back_is_reconnected(
    own_server: OwnServer, opened: list[BeanstalkTransport]
) -> None:
    url = f"beanstalk://127.0.0.1:{own_server.port}/?prefix=r&connect_timeout=1"
    t = await connect(opened, url)
    await t.publish([out("before")])
    [d] = await t.fetch(["q"], limit=1, lease=30, wait=2)
    own_server.kill()
    with pytest.raises(TransportUnavailable, match=f"127.0.0.1:{own_server.port}"):
        await t.publish([out("during")])
    await t.ack([d])  # its lease went with the server: a no-op, never an error
    own_server.start()  # no binlog: the restarted server is empty
    await t.publish([out("after")])
    [d2] = await t.fetch(["q"], limit=1, lease=30, wait=2)
    assert d2.body == b"after"
    await t.ack([d2])


async def test_buried_jobs_past_the_cap_or_the_retention_are_deleted_with_their_records(
    url: str, opened: list[BeanstalkTransport], caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(time.time())
    t = BeanstalkTransport(url, clock=clock, dead_ttl=60, dead_max=2)
    await t.connect()
    opened.append(t)
    await t.publish([out(f"m{i}") for i in range(4)])
    got = await t.fetch(["q"], limit=4, lease=30, wait=2)
    assert len(got) == 4
    await t.dead_letter([DeadLetterRequest(got[0], "first")])
    clock.advance(61)
    with caplog.at_level("WARNING", "hubbub.transports"):
        await t.dead_letter([DeadLetterRequest(d, "later") for d in got[1:]])
    [stats] = await t.stats(["q"])
    assert stats.dead == 2  # buried jobs: the cap holds in beanstalkd itself
    assert [d.id for d in await t.list_dead("q")] == [d.id for d in got[2:]]
    assert "dropped 1 dead letter(s) of queue 'q': over the cap of 2" in caplog.text
    assert "dropped 1 dead letter(s) of queue 'q': older than the retention" in caplog.text
    records = greenstalk.Client((server.HOST, server.PORT), use=t._dead_tube)
    try:
        assert records.stats_tube(t._dead_tube)["current-jobs-ready"] == 2
    finally:
        records.close()
