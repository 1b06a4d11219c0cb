"""One malformed entry written straight into the broker must not kill or wedge a worker.

Each test writes raw entries below hubbub (XADD, an aio-pika publish, a beanstalkd put, an
SQLite INSERT) next to good tasks, drains with a real worker and checks: the worker
finished, each bad entry is a dead letter with a reason, each good task ran exactly once,
and nothing is left leased. Then unit tests of the clamps, the caps and
``MessageRejectedByBroker``, and a property test that fetch never raises on what a broker
may hold.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aio_pika
import greenstalk  # type: ignore[import-untyped]
import pytest
import redis as redis_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubbub._text import MAX_REASON, cap
from hubbub.errors import MessageRejectedByBroker, TransportError
from hubbub.testing import drain
from hubbub.transports import Outgoing, Transport
from hubbub.transports._amqp_topology import H_ATTEMPTS, H_ETA, delay_units, main_name
from hubbub.transports._redis_lua import QueueKeys
from hubbub.transports._safe import MAX_HEADER, count_of, due_at
from hubbub.transports.base import DeadLetterRequest
from tests.hostile.conftest import QUEUE, Site


def _prefix(url: str) -> str:
    return parse_qs(urlsplit(url).query)["prefix"][0]


# -- raw writers, one per broker: what another tool could leave in the queue ----------------


def _sqlite_rows(site: Site) -> int:
    path = urlsplit(site.url).path[1:]
    with sqlite3.connect(path) as conn:
        rows = [  # (id, priority, body, attempts), as SQL expressions
            ("'text-body'", "0", "'a body stored as TEXT'", "0"),
            ("CAST(x'fffe41' AS TEXT)", "0", "x'00ff'", "0"),  # id not UTF-8
            ("x'c3'", "'high'", "'x'", "'many'"),  # BLOB id, text priority and attempts
            ("'int-body'", "1e300", "42", "-7"),
        ]
        for ident, priority, body, attempts in rows:
            conn.execute(
                "INSERT INTO hubbub_messages (id, queue, priority, body, visible_at, attempts)"
                f" VALUES ({ident}, ?, {priority}, {body}, 0, {attempts})", (QUEUE,))
    return len(rows)


def _redis_entries(site: Site) -> int:
    stream = QueueKeys.of(_prefix(site.url), QUEUE).ready[0]
    client = redis_sync.Redis(host="127.0.0.1", port=6379)
    try:
        entries: list[dict[Any, Any]] = [
            {"body": b"no id field"},
            {"id": "no-body-field"},
            {"id": b"\xff\xfe-not-utf8", "body": b"{}"},
            {"id": "bad-count", "body": b"x", "a": "lots"},
            {"unrelated": "fields"},
        ]
        for fields in entries:
            client.xadd(stream, fields)
    finally:
        client.close()
    return len(entries)


async def _amqp_publish(url: str, messages: Sequence[aio_pika.Message]) -> None:
    prefix = _prefix(url)
    async with await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/") as conn:
        channel = await conn.channel()
        for m in messages:
            await channel.default_exchange.publish(m, routing_key=main_name(prefix, QUEUE))


def _amqp_messages(site: Site) -> int:
    messages = [
        aio_pika.Message(b"attempts not a number", message_id="bad-attempts",
                         headers={H_ATTEMPTS: "many"}),
        aio_pika.Message(b"eta not a number", message_id="bad-eta", headers={H_ETA: "soon"}),
        aio_pika.Message(b"eta nan", headers={H_ETA: "nan", H_ATTEMPTS: 2.5}),
        aio_pika.Message(b"\xff\xfe", message_id="x" * 200, priority=200,
                         headers={H_ATTEMPTS: [1, 2], H_ETA: {"a": 1}}),
    ]
    asyncio.run(_amqp_publish(site.url, messages))
    return len(messages)


def _beanstalk_jobs(site: Site) -> int:
    jobs = [b"hb1 \xff\xfe-not-utf8\n{}", b"hb1 \nempty id", b"no framing at all", b"hb1 "]
    with greenstalk.Client(("127.0.0.1", 11300), use=f"{_prefix(site.url)}.{QUEUE}",
                           encoding=None) as client:
        for job in jobs:
            client.put(job)
    return len(jobs)


RAW = {"sqlite": _sqlite_rows, "redis": _redis_entries, "amqp": _amqp_messages,
       "beanstalk": _beanstalk_jobs}


@pytest.mark.timeout(90)
def test_bad_entries_are_dead_lettered_and_good_tasks_run_once(site: Site) -> None:
    good = site.send_good(3)  # first: it declares the queue, the stream and its group
    bad = RAW[site.name](site)
    good += site.send_good(3)

    drain(site.hub, [QUEUE], timeout=60)  # returns only once the queue is empty

    assert dict(site.runs) == dict.fromkeys(good, 1)
    dead = site.dead()
    assert len(dead) == bad, [d.id for d in dead]
    for d in dead:
        assert isinstance(d.id, str)
        assert isinstance(d.body, bytes)
        assert d.reason.strip(), f"dead letter {d.id!r} has no reason"
    stats = site.stats()
    assert (stats.ready, stats.delayed, stats.leased, stats.dead) == (0, 0, 0, bad)


@pytest.mark.timeout(60)
def test_bad_entries_can_be_dead_lettered_and_acked_by_hand(site: Site) -> None:
    async def declare(t: Transport) -> None:  # the table, stream group or queue to write to
        await t.publish([Outgoing(QUEUE, b"", "seed")])
        await t.purge(QUEUE)

    site.run(declare)
    bad = RAW[site.name](site)

    async def settle(t: Transport) -> list[str]:
        got = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(got) < bad and loop.time() < deadline:
            got += await t.fetch([QUEUE], limit=bad, lease=10, wait=1)
        assert len(got) == bad
        for d in got:
            assert isinstance(d.body, bytes)
            assert isinstance(d.id, str)
            d.id.encode()  # a str that encodes: safe to log, store and send again
        await t.dead_letter([DeadLetterRequest(got[0], "x" * (200 * 1024) + "\udcff")])
        await t.ack(got[1:])
        return [d.id for d in got]

    site.run(settle)
    [dead] = site.dead()
    assert len(dead.reason) <= MAX_REASON
    assert "cut" in dead.reason[-60:]
    stats = site.stats()
    assert (stats.ready, stats.leased, stats.dead) == (0, 0, 1)


# -- writes that can never succeed -----------------------------------------------------------


def _out(queue: str = QUEUE, *, eta: float | None = None, body: bytes = b"x",
         id: str = "m1") -> Outgoing:
    return Outgoing(queue, body, id, 0, eta)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("eta", [math.nan, math.inf, -math.inf, 1e300, 1e12])
def test_any_eta_is_stored_clamped(site: Site, eta: float) -> None:
    async def publish(t: Transport) -> Any:
        await t.publish([_out(eta=eta, id="odd-eta"), _out(id="plain")])
        [stats] = await t.stats([QUEUE])
        got = await t.fetch([QUEUE], limit=5, lease=5, wait=1)
        await t.ack(got)
        return stats, [d.id for d in got]

    stats, ids = site.run(publish)
    if math.isnan(eta) or eta < 0:  # now
        assert sorted(ids) == ["odd-eta", "plain"]
    else:  # as late as the broker can hold, which is still later than now
        assert ids == ["plain"]
        assert stats.delayed == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("queue", ["", "\udcff"])
def test_a_queue_no_worker_could_name_is_rejected_before_sending(site: Site, queue: str) -> None:
    async def publish(t: Transport) -> None:
        with pytest.raises(MessageRejectedByBroker) as caught:
            await t.publish([_out(id="ok-1"), _out(queue, id="lost"), _out(id="ok-2")])
        assert caught.value.id == "lost"
        [stats] = await t.stats([QUEUE])
        assert stats.ready == 0, "nothing of the batch may be sent"

    site.run(publish)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("site", ["beanstalk"], indirect=True)
def test_beanstalk_job_over_max_size_and_odd_queue_names(site: Site) -> None:

    async def publish(t: Transport) -> None:
        limit = t.capabilities.max_message_size
        assert limit is not None
        with pytest.raises(MessageRejectedByBroker, match="its -z option") as caught:
            await t.publish([_out(id="fits"), _out(body=b"x" * (limit + 1), id="huge")])
        assert (caught.value.id, caught.value.queue) == ("huge", QUEUE)
        assert isinstance(caught.value, TransportError)
        with pytest.raises(MessageRejectedByBroker, match="tube"):
            await t.publish([_out("q" * 300, id="long")])
        # names with spaces and non-ASCII are escaped into legal tube names, both ways
        await t.publish([_out("with space", id="a"), _out("naïve ☃", id="b")])
        got = await t.fetch(["with space", "naïve ☃"], limit=2, lease=5, wait=2)
        assert sorted((d.queue, d.id) for d in got) == [("naïve ☃", "b"), ("with space", "a")]
        await t.ack(got)
        await t.purge("with space")
        await t.purge("naïve ☃")

    site.run(publish)


# -- units -----------------------------------------------------------------------------------


def test_due_at_clamps_to_now_or_the_longest_delay() -> None:
    assert due_at(None, 100.0) is None
    assert due_at(math.nan, 100.0) is None
    assert due_at(50.0, 100.0) is None
    assert due_at(-math.inf, 100.0) is None
    assert due_at(150.0, 100.0) == 150.0
    assert due_at(math.inf, 100.0, 10.0) == 110.0
    assert due_at(1e300, 100.0, 10.0) == 110.0


def test_amqp_delay_units_survive_nan_and_infinity() -> None:
    assert delay_units(math.nan, 0.0) == 0
    assert delay_units(math.inf, 0.0) == (1 << 24) - 1
    assert delay_units(1e300, 0.0) == (1 << 24) - 1


def test_beanstalk_delays_fit_in_32_bits() -> None:
    from hubbub.transports._beanstalk_jobs import MAX_DELAY
    from hubbub.transports._beanstalk_jobs import delay_seconds as _seconds

    assert _seconds(math.nan) == 0
    assert _seconds(-5.0) == 0
    assert _seconds(1.2) == 2
    assert _seconds(1e12) == MAX_DELAY == 2**32 - 1
    assert _seconds(math.inf) == MAX_DELAY


def test_cap_bounds_text_and_says_so() -> None:
    assert cap("short") == "short"
    text = cap("y" * 200_000 + "\udcff", MAX_HEADER)
    assert len(text) <= MAX_HEADER
    assert text.endswith("more characters]")
    text.encode()
    assert cap("a\udcffb") == "a\\udcffb"


def test_count_of_defaults_anything_that_is_not_a_count() -> None:
    for raw in ("many", b"\xff", None, [1], {"a": 1}, True, -1, 1 << 40, "1e3", math.nan):
        assert count_of(raw, 7) == 7
    assert count_of(3, 0) == 3
    assert count_of(b"4", 0) == 4
    assert count_of(" 5 ", 0) == 5


def test_message_rejected_by_broker_names_the_item_and_the_reason() -> None:
    exc = MessageRejectedByBroker("abc", "emails", "too big")
    assert isinstance(exc, TransportError)
    assert (exc.id, exc.queue, exc.reason) == ("abc", "emails", "too big")
    assert "'abc'" in str(exc)
    assert "too big" in str(exc)


def test_amqp_headers_are_bounded() -> None:
    from hubbub.transports._amqp_topology import H_REASON, build_message

    m = build_message("q", b"", "i" * 1000 + "\udcff", 0, 0, **{H_REASON: "r" * 200_000})
    assert m.headers is not None
    assert len(str(m.headers[H_REASON])) <= MAX_HEADER
    assert m.message_id is not None
    assert len(m.message_id.encode()) <= 255



# -- property: whatever a broker holds, fetch returns it or dead-letters it, never raises ----

_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=24)
# RabbitMQ itself refuses NaN and infinite floats in headers (it closes the publisher's
# connection with INTERNAL_ERROR), so they cannot reach a consumer; as text they can.
_HEADER_VALUES = st.one_of(
    st.integers(-(2**40), 2**40), st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.sampled_from(["nan", "inf", "-1", "1e400", ""]), _TEXT, st.booleans(),
    st.lists(st.integers(0, 9), max_size=3),
)
_SQL_VALUES = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), _TEXT,
                        st.binary(max_size=24))


def _redis_writer(site: Site) -> tuple[Any, Any]:
    stream = QueueKeys.of(_prefix(site.url), QUEUE).ready[0]
    client = redis_sync.Redis(host="127.0.0.1", port=6379)
    fields = st.dictionaries(st.sampled_from([b"id", b"body", b"a", b"p"]) | st.binary(max_size=6),
                             st.binary(max_size=24), min_size=1, max_size=5)

    async def write(entry: dict[bytes, bytes]) -> None:
        client.xadd(stream, entry)  # type: ignore[arg-type]

    return fields, write


def _amqp_writer(site: Site) -> tuple[Any, Any]:
    keys = st.sampled_from([H_ATTEMPTS, H_ETA, "hubbub-queue", "x-other"])
    message = st.builds(
        lambda body, headers, mid, priority: aio_pika.Message(
            body, headers=headers, message_id=mid, priority=priority),
        st.binary(max_size=48), st.dictionaries(keys, _HEADER_VALUES, max_size=4),
        st.none() | _TEXT.filter(lambda t: len(t.encode()) < 256), st.integers(0, 255))

    async def write(m: aio_pika.Message) -> None:
        await _amqp_publish(site.url, [m])

    return message, write


def _beanstalk_writer(site: Site) -> tuple[Any, Any]:
    jobs = st.binary(max_size=48) | st.binary(max_size=48).map(lambda b: b"hb1 " + b)

    async def write(job: bytes) -> None:
        with greenstalk.Client(("127.0.0.1", 11300), use=f"{_prefix(site.url)}.{QUEUE}",
                               encoding=None) as client:
            client.put(job)

    return jobs, write


def _sqlite_writer(site: Site) -> tuple[Any, Any]:
    path = urlsplit(site.url).path[1:]
    visible = st.floats(-1e10, 0) | _TEXT | st.binary(max_size=4)
    rows = st.tuples(_SQL_VALUES, _SQL_VALUES, _SQL_VALUES, _SQL_VALUES, visible)

    async def write(row: tuple[Any, ...]) -> None:
        ident, priority, body, attempts, at = row
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO hubbub_messages (id, queue, priority, body, attempts,"
                         " visible_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (ident, QUEUE, priority, body, attempts, at))

    return rows, write


WRITERS = {"sqlite": _sqlite_writer, "redis": _redis_writer, "amqp": _amqp_writer,
           "beanstalk": _beanstalk_writer}


@pytest.mark.timeout(120)
def test_fetch_never_raises_for_any_entry_a_broker_can_hold(site: Site) -> None:
    strategy, write = WRITERS[site.name](site)

    async def check(t: Transport) -> None:
        await t.publish([Outgoing(QUEUE, b"", "seed")])  # the table, group or queue
        await t.purge(QUEUE)
        loop = asyncio.get_running_loop()

        @settings(max_examples=50, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(strategy)
        def one(entry: Any) -> None:
            async def go() -> None:
                await write(entry)
                got = await t.fetch([QUEUE], limit=10, lease=10, wait=0.3)
                for d in got:
                    assert isinstance(d.body, bytes)
                    assert isinstance(d.id, str)
                    assert isinstance(d.attempts, int)
                    d.id.encode()
                await t.dead_letter([DeadLetterRequest(d, "hostile") for d in got])
                await t.purge(QUEUE)  # what was not handed out (delayed by its headers)

            asyncio.run_coroutine_threadsafe(go(), loop).result(30)

        await asyncio.to_thread(one)  # hypothesis drives sync code; the loop serves it
        [stats] = await t.stats([QUEUE])
        assert stats.leased == 0

    site.run(check)


@pytest.mark.timeout(60)
def test_an_id_with_a_lone_surrogate_is_published_and_dead_lettered(site: Site) -> None:
    async def roundtrip(t: Transport) -> None:
        await t.publish([_out(id="m-\udcff")])
        [d] = await t.fetch([QUEUE], limit=1, lease=5, wait=5)
        assert d.id == "m-\\udcff"  # escaped, so every broker and log can carry it
        await t.dead_letter([DeadLetterRequest(d, "reason \udcff")])
        [dead] = await t.list_dead(QUEUE)
        assert (dead.id, dead.reason) == ("m-\\udcff", "reason \\udcff")

    site.run(roundtrip)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("site", ["redis"], indirect=True)
def test_a_redis_stream_created_by_another_tool_is_adopted(site: Site) -> None:
    bad = _redis_entries(site)  # before hubbub ever published: a stream with no group
    good = site.send_good(3)

    drain(site.hub, [QUEUE], timeout=40)

    assert dict(site.runs) == dict.fromkeys(good, 1)
    stats = site.stats()
    assert (stats.ready, stats.leased, stats.dead) == (0, 0, bad)
