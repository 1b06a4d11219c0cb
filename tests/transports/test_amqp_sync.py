"""RabbitMQ's direct path: ``delay()`` from sync code publishes from the caller's thread over
one shared blocking connection with pipelined confirms, and what it sends reads exactly like
what the loop's ``publish`` sends (headers, priority, delays), with the same errors.

Run against the shared RabbitMQ on 127.0.0.1:5672 (a prefix per test); an unreachable
broker skips locally and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer
from amqp.serialization import dumps

from hubbub import Hub, TransportError, TransportUnavailable
from hubbub.errors import MessageRejectedByBroker
from hubbub.transports import Outgoing, _amqp_sync
from hubbub.transports._amqp_pipe import Pipe
from hubbub.transports._amqp_sync import direct, options
from hubbub.transports._amqp_topology import main_name
from hubbub.transports.amqp import AMQPTransport
from tests import brokers
from tests.brokers import amqp as server
from tests.faults.proxy import Proxy


@pytest.fixture
def prefix() -> Iterator[str]:
    brokers.require(server)
    made = "t" + uuid.uuid4().hex[:10]
    try:
        yield made
    finally:
        asyncio.run(server.cleanup(server.make_url(Path(), made)))


@pytest.fixture
def hub(prefix: str) -> Iterator[Hub]:
    h = Hub(server.make_url(Path(), prefix), results="none")
    try:
        yield h
    finally:
        h.close()


def transport(hub: Hub) -> AMQPTransport:
    client = hub._connector.current()
    assert client is not None
    assert isinstance(client.transport, AMQPTransport)
    return client.transport


def fetch(hub: Hub, queue: str = "default", *, n: int = 1, wait: float = 5) -> list[Any]:
    """Take (and ack) ``n`` deliveries from ``queue`` through the transport's loop."""

    async def take() -> list[Any]:
        t = await hub.client()
        got: list[Any] = []
        deadline = time.monotonic() + wait
        while len(got) < n and time.monotonic() < deadline:
            got += await t.transport.fetch([queue], limit=n - len(got), lease=30, wait=0.5)
        await t.transport.ack(got)
        return got

    return hub.bridge.run(take())


def test_a_connected_amqp_transport_has_a_sync_publisher(hub: Hub) -> None:
    assert AMQPTransport(server.make_url(Path(), "unconnected")).sync_publisher() is None
    hub.task(lambda: None, name="noop").delay()  # connects
    assert transport(hub).sync_publisher() is not None


def test_delay_does_not_wait_for_the_bridge_loop(hub: Hub) -> None:
    noop = hub.task(lambda: None, name="noop")
    noop.delay()  # connects and declares the queue through the bridge loop
    release, blocked = threading.Event(), threading.Event()

    async def block_the_loop() -> None:
        blocked.set()
        release.wait(30)  # holds the bridge thread: nothing else runs on its loop

    held = asyncio.run_coroutine_threadsafe(block_the_loop(), hub.bridge.loop())
    try:
        assert blocked.wait(10)
        sent = threading.Thread(target=noop.delay)
        sent.start()
        sent.join(10)
        assert not sent.is_alive(), "delay() waited for the bridge loop"
    finally:
        release.set()
        held.result(10)


def test_sync_and_loop_publishes_carry_the_same_id_priority_and_headers(hub: Hub) -> None:
    noop = hub.task(lambda: None, name="noop")
    noop.delay()  # connects
    fetch(hub)
    t = transport(hub)
    publisher = t.sync_publisher()
    assert publisher is not None
    publisher.publish([Outgoing("default", b"sync", "id-sync", priority=42)])
    hub.bridge.run(t.publish([Outgoing("default", b"loop", "id-loop", priority=42)]))
    got = {d.body: d for d in fetch(hub, n=2)}
    sync, loop = got[b"sync"], got[b"loop"]
    assert (sync.id, sync.priority, sync.attempts) == ("id-sync", 9, 1)
    assert (loop.id, loop.priority, loop.attempts) == ("id-loop", 9, 1)
    assert sync.headers == loop.headers


def test_tasks_sent_from_many_threads_all_arrive_once(hub: Hub) -> None:
    noop = hub.task(lambda: None, name="noop")
    sent: list[str] = []
    lock = threading.Lock()

    def send() -> None:
        for _ in range(20):
            ident = noop.delay().id
            with lock:
                sent.append(ident)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert len(sent) == 160
    assert sorted(d.id for d in fetch(hub, n=160, wait=20)) == sorted(sent)


def test_a_delayed_sync_send_waits_in_the_broker_until_its_eta(hub: Hub) -> None:
    noop = hub.task(lambda: None, name="noop")
    noop.delay()
    fetch(hub)
    publisher = transport(hub).sync_publisher()
    assert publisher is not None
    eta = time.time() + 0.5
    publisher.publish([Outgoing("later", b"x", "id-later", eta=eta)])
    [d] = fetch(hub, "later", wait=10)
    assert d.id == "id-later"
    assert time.time() >= eta - 0.05  # the cascade holds it to a tenth of a second


def test_a_batch_from_sync_code_is_published_whole(hub: Hub) -> None:
    hub.task(lambda: None, name="noop").delay()
    fetch(hub)
    publisher = transport(hub).sync_publisher()
    assert publisher is not None
    publisher.publish([Outgoing("default", b"%d" % i, f"id-{i}") for i in range(5)])
    assert sorted(d.id for d in fetch(hub, n=5)) == [f"id-{i}" for i in range(5)]


def test_a_queue_deleted_behind_the_transports_back_is_a_clear_error(hub: Hub,
                                                                     prefix: str) -> None:
    noop = hub.task(lambda: None, name="noop")
    noop.delay()

    async def delete() -> None:
        async with await aio_pika.connect(server.make_url(Path(), prefix)) as conn:
            channel = await conn.channel()
            await channel.queue_delete(main_name(prefix, "default"))

    asyncio.run(delete())
    with pytest.raises(TransportError, match="unroutable"):
        noop.delay()


def test_a_rabbitmq_that_goes_away_fails_a_sync_delay_and_the_pool_reconnects(
        prefix: str) -> None:
    brokers.require(server)
    with Proxy(server.server()) as proxy:
        hub = Hub(f"amqp://guest:guest@{proxy.address}/?prefix={prefix}&connect_timeout=1",
                  results="none")
        noop = hub.task(lambda: None, name="noop")
        try:
            noop.delay()
            proxy.cut()
            with pytest.raises(TransportUnavailable, match=r"RabbitMQ.*127\.0\.0\.1:\d+"):
                noop.delay()
            proxy.restore()
            noop.delay()  # a new connection
        finally:
            hub.close()


def test_a_rabbitmq_that_stops_answering_fails_a_sync_delay_within_its_timeout(
        prefix: str) -> None:
    brokers.require(server)
    with Proxy(server.server()) as proxy:
        hub = Hub(f"amqp://guest:guest@{proxy.address}/?prefix={prefix}&publish_timeout=1",
                  results="none")
        noop = hub.task(lambda: None, name="noop")
        try:
            noop.delay()
            proxy.stall()
            with pytest.raises(TransportUnavailable, match="within 1s"):
                noop.delay()
            proxy.restore()
            noop.delay()
        finally:
            hub.close()


def test_a_forked_child_publishes_on_connections_of_its_own(hub: Hub) -> None:
    noop = hub.task(lambda: None, name="noop")
    before = noop.delay().id  # the parent's pool holds a connection when it forks
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()

    def child() -> None:
        out.put(noop.delay().id)  # through the inherited hub

    proc = ctx.Process(target=child)
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    child_id = out.get(timeout=10)
    after = noop.delay().id  # the parent's connections still work
    assert sorted(d.id for d in fetch(hub, n=3)) == sorted([before, child_id, after])


def test_tls_options_in_the_url_keep_sync_sends_on_the_loops_connection() -> None:
    assert direct("amqp://guest:guest@127.0.0.1:5672/")
    assert direct("amqps://guest:guest@broker.example:5671/")
    assert not direct("amqps://u:p@broker.example:5671/?cafile=/etc/ca.pem")
    assert not direct("amqps://u:p@broker.example:5671/?certfile=c.pem&keyfile=k.pem")
    tls = options("amqps://u:p@broker.example/vh", connect_timeout=10, publish_timeout=30)
    assert tls["ssl"] == {"context": {"check_hostname": True},
                          "server_hostname": "broker.example"}
    assert (tls["host"], tls["virtual_host"]) == ("broker.example:5671", "vh")


def test_a_queue_name_amqp_cannot_hold_is_refused_before_anything_is_sent(hub: Hub) -> None:
    hub.task(lambda: None, name="noop").delay()
    publisher = transport(hub).sync_publisher()
    assert publisher is not None
    for _ in range(2):  # the second time too: a refused name is not remembered as good
        with pytest.raises(MessageRejectedByBroker, match="does not suit AMQP"):
            publisher.publish([Outgoing("no spaces allowed", b"x", "id-bad")])


def test_a_connection_idle_past_its_retirement_is_replaced(
        hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    noop = hub.task(lambda: None, name="noop")
    noop.delay()
    publisher = sync_publisher(hub)
    first = publisher._pipe
    assert first is not None
    monkeypatch.setattr(_amqp_sync, "RETIRE", -1.0)  # every idle connection is too old
    noop.delay()
    second = publisher._pipe
    assert second is not first
    assert not first.conn.connected
    assert not first._reader.is_alive()
    monkeypatch.setattr(_amqp_sync, "RETIRE", 3600.0)
    noop.delay()
    assert publisher._pipe is second  # a fresh one is reused
    assert len(fetch(hub, n=3)) == 3


def sync_publisher(hub: Hub) -> _amqp_sync.AMQPSyncPublisher:
    publisher = transport(hub).sync_publisher()
    assert isinstance(publisher, _amqp_sync.AMQPSyncPublisher)
    return publisher


def wait_until(condition: Callable[[], bool], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)  # polling a condition another thread makes true


@contextlib.contextmanager
def one_write(pipe: Pipe, messages: int) -> Iterator[None]:
    """Hold the pipe's writer until ``messages`` are queued, then write them at once: they
    are in flight together."""
    with pipe._writing:
        yield
        wait_until(lambda: len(pipe._outbox) == messages)
        pipe._write()


def in_threads(calls: list[Callable[[], object]]) -> list[BaseException | None]:
    """Run each call on a thread of its own; what each raised (None: it returned)."""
    outcomes: list[BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            calls[i]()
        except BaseException as exc:  # the outcome under test
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads), "a send hung"
    return outcomes


def test_threads_sending_at_once_share_one_connection_and_each_message_arrives_once(
        hub: Hub) -> None:
    hub.task(lambda: None, name="noop").delay()
    fetch(hub)
    publisher = sync_publisher(hub)
    pipe = publisher._pipe
    assert pipe is not None

    def sender(t: int) -> Callable[[], None]:
        def send() -> None:
            for i in range(25):
                publisher.publish([Outgoing("default", b"body %d-%d" % (t, i), f"id-{t}-{i}")])
        return send

    assert in_threads([sender(t) for t in range(16)]) == [None] * 16
    assert publisher._pipe is pipe
    got = fetch(hub, n=400, wait=30)
    assert sorted((d.id, d.body) for d in got) == sorted(
        (f"id-{t}-{i}", b"body %d-%d" % (t, i)) for t in range(16) for i in range(25))
    assert fetch(hub, wait=0.5) == []  # nothing twice


def test_an_unroutable_message_fails_only_its_own_sender(hub: Hub, prefix: str) -> None:
    noop = hub.task(lambda: None, name="noop")
    only_the_unroutable_fails(hub, prefix, noop, lambda: _pipe_of(hub))


def _pipe_of(hub: Hub) -> Pipe:
    pipe = sync_publisher(hub)._pipe
    assert pipe is not None
    return pipe


def only_the_unroutable_fails(hub: Hub, prefix: str, noop: Any, pipe_of: Callable[[], Pipe],
                              returned_body: bytes = b"x") -> None:
    """Nine sends at once in one write, the fifth to a queue deleted behind the transport's
    back: only that one fails, as unroutable, the others arrive, and the connection
    (``pipe_of()`` after the warm-up) is kept. Shared with the TLS tests."""
    noop.delay()
    noop.apply_async(queue="gone")
    fetch(hub)
    fetch(hub, "gone")

    async def delete() -> None:
        async with await aio_pika.connect(server.make_url(Path(), prefix)) as conn:
            channel = await conn.channel()
            await channel.queue_delete(main_name(prefix, "gone"))

    asyncio.run(delete())
    publisher = sync_publisher(hub)
    pipe = pipe_of()
    queues = ["default"] * 4 + ["gone"] + ["default"] * 4
    with one_write(pipe, len(queues)):
        sends = in_threads_later([
            functools.partial(publisher.publish,
                              [Outgoing(q, returned_body if q == "gone" else b"x", f"id-{i}")])
            for i, q in enumerate(queues)])
    outcomes = sends()
    [returned] = [o for o in outcomes if o is not None]
    assert outcomes.index(returned) == 4
    assert isinstance(returned, TransportError)
    assert "unroutable" in str(returned)
    assert sorted(d.id for d in fetch(hub, n=8)) == sorted(
        f"id-{i}" for i, q in enumerate(queues) if q == "default")
    noop.delay()  # the connection is still good
    assert publisher._pipe is pipe


def test_a_connection_cut_with_messages_in_flight_fails_each_sender_and_is_replaced(
        prefix: str) -> None:
    brokers.require(server)
    with Proxy(server.server()) as proxy:
        hub = Hub(f"amqp://guest:guest@{proxy.address}/?prefix={prefix}&connect_timeout=1",
                  results="none")
        noop = hub.task(lambda: None, name="noop")
        try:
            noop.delay()
            publisher = sync_publisher(hub)
            pipe = publisher._pipe
            assert pipe is not None
            proxy.stall()  # what is written now is neither confirmed nor refused
            with one_write(pipe, 8):
                sends = in_threads_later([noop.delay] * 8)
            wait_until(lambda: pipe._tag == 9)  # the warm-up's tag was 1
            proxy.cut()
            outcomes = sends()
            assert all(isinstance(o, TransportUnavailable) for o in outcomes), outcomes
            assert all(re.search(r"RabbitMQ.*127\.0\.0\.1:\d+", str(o)) for o in outcomes)
            wait_until(lambda: not pipe._reader.is_alive())
            proxy.restore()
            noop.delay()  # on a new connection
            assert publisher._pipe is not pipe
        finally:
            hub.close()


def test_a_nack_fails_its_senders_and_the_next_send_takes_a_new_connection(
        prefix: str) -> None:
    brokers.require(server)
    with Proxy(server.server()) as proxy:
        hub = Hub(f"amqp://guest:guest@{proxy.address}/?prefix={prefix}", results="none")
        noop = hub.task(lambda: None, name="noop")
        try:
            noop.delay()
            publisher = sync_publisher(hub)
            pipe = publisher._pipe
            assert pipe is not None
            proxy.stall()  # the broker's own acks cannot come first
            with one_write(pipe, 4):
                sends = in_threads_later([noop.delay] * 4)
            wait_until(lambda: pipe._tag == 5)
            pipe._on_nack(3, True)  # as the reader thread would: tags 2 and 3 refused
            outcomes = sends()
            assert all(isinstance(o, TransportUnavailable) for o in outcomes), outcomes
            assert sum("refused (nack)" in str(o) for o in outcomes) >= 2
            proxy.restore()
            noop.delay()
            assert publisher._pipe is not pipe
        finally:
            hub.close()


def in_threads_later(calls: list[Callable[[], object]]) -> Callable[[], list[BaseException | None]]:
    """``in_threads`` started now; the returned function waits for the outcomes."""
    done: list[list[BaseException | None]] = []
    runner = threading.Thread(target=lambda: done.append(in_threads(calls)))
    runner.start()

    def outcomes() -> list[BaseException | None]:
        runner.join(90)
        assert done, "a send hung"
        return done[0]

    return outcomes


def test_a_connection_the_broker_closes_while_idle_is_replaced_before_use(hub: Hub) -> None:
    noop = hub.task(lambda: None, name="noop")
    noop.delay()
    pipe = sync_publisher(hub)._pipe
    assert pipe is not None
    pipe.conn.transport.sock.shutdown(socket.SHUT_RD)  # as a closed connection reads: EOF
    wait_until(lambda: pipe.failed is not None)  # its reader sees it at once
    noop.delay()  # not an error: a new connection
    assert sync_publisher(hub)._pipe is not pipe
    assert len(fetch(hub, n=2)) == 2


@pytest.mark.parametrize("size", [0, 300, 200_000])  # no body frame; one; in chunks
def test_a_publish_is_framed_byte_for_byte_as_py_amqp_frames_it(hub: Hub, size: int) -> None:
    hub.task(lambda: None, name="noop").delay()
    pipe = sync_publisher(hub)._pipe
    assert pipe is not None
    message = amqp.Message(b"b" * size, delivery_mode=2, message_id="0123abcd", priority=4,
                           application_headers={"hubbub-queue": "q", "hubbub-attempts": 0})
    args = dumps("Bssbb", (0, "", "t.q", True, False))
    written: list[bytes] = []
    transport = type("Collect", (), {"write": lambda _, frames: written.append(bytes(frames))})
    frame_writer(pipe.conn, transport())(1, pipe._channel_id, spec.Basic.Publish, args, message)
    assert pipe._frames(args, message) == b"".join(written)


def test_closing_the_hub_ends_the_connections_reader_thread(prefix: str) -> None:
    brokers.require(server)
    hub = Hub(server.make_url(Path(), prefix), results="none")
    try:
        hub.task(lambda: None, name="noop").delay()
        pipe = sync_publisher(hub)._pipe
        assert pipe is not None
        assert pipe._reader.is_alive()
        assert pipe._reader.daemon
    finally:
        hub.close()
    assert not pipe._reader.is_alive()
    assert not pipe.conn.connected
