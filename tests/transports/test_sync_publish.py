"""The producer's direct path: ``delay()`` from sync code publishes on the caller's thread
(SQLite, one Redis server), with the same messages, errors and hooks as the loop's path.

Run against the embedded SQLite file and the shared Redis on 127.0.0.1:6379 (a key prefix
per test); an unreachable Redis skips locally and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from hubbub import Hub, TransportUnavailable
from hubbub.message import decode
from hubbub.middleware import Middleware, PublishNext
from hubbub.signing import Signer
from hubbub.testing import drain
from hubbub.tracing import instrument
from tests import brokers
from tests.faults.proxy import Proxy

KEYS = {"k1": "a-secret-of-32-bytes-for-tests!!"}


def test_a_sync_publisher_exists_for_sqlite_and_one_redis_server(url: str) -> None:
    hub = Hub(url, results="none")
    try:
        hub.task(lambda: None, name="noop").delay()  # connects
        client = hub._connector.current()
        assert client is not None
        assert client.transport.sync_publisher() is not None
    finally:
        hub.close()


def test_delay_does_not_wait_for_the_bridge_loop(url: str) -> None:
    hub = Hub(url, results="none")
    noop = hub.task(lambda: None, name="noop")
    noop.delay()  # the first call connects through the bridge loop
    release = threading.Event()
    blocked = threading.Event()

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
        hub.close()


def test_signed_tasks_sent_from_many_threads_all_run(url: str, tmp_path: Path) -> None:
    hub = Hub(url, results=f"sqlite:///{tmp_path / 'results.db'}", signing_keys=KEYS)

    @hub.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    results: list[Any] = []
    lock = threading.Lock()

    def send(start: int) -> None:
        for x in range(start, start + 25):
            result = double.delay(x)
            with lock:
                results.append((x, result))

    threads = [threading.Thread(target=send, args=(25 * i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 200
        drain(hub)  # the worker refuses unsigned or tampered messages
        assert all(r.get(timeout=10) == 2 * x for x, r in results)
    finally:
        hub.close()


def test_what_the_direct_path_publishes_is_signed_and_carries_the_trace(url: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    hub = Hub(url, results="none", signing_keys=KEYS)
    instrument(hub, tracer_provider=TracerProvider())
    noop = hub.task(lambda: None, name="noop")
    try:
        sent = noop.delay()

        async def fetch() -> list[Any]:
            client = await hub.client()
            return await client.transport.fetch(["default"], limit=10, lease=5, wait=1)

        [delivery] = hub.bridge.run(fetch())
        envelope = decode(delivery.body, signer=Signer(KEYS))
        assert envelope.id == sent.id
        assert envelope.headers["traceparent"].startswith("00-")
    finally:
        hub.close()


def test_task_sent_events_are_emitted_for_direct_and_own_loop_publishes(url: str) -> None:
    hub = Hub(url, results="none", events=True)
    noop = hub.task(lambda: None, name="noop")
    seen: list[Any] = []
    hub.events.subscribe(seen.append)
    try:
        sent = noop.delay()
        assert [(e.id, e.task) for e in seen] == [(sent.id, "noop")]

        async def main() -> list[str]:  # on the loop's own connections
            return [(await noop.delay_async()).id for _ in range(3)]

        ids = asyncio.run(main())
        assert [e.id for e in seen] == [sent.id, *ids]
    finally:
        hub.close()


class Seen(Middleware):
    """Keeps the id of every envelope published."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    async def around_publish(self, envelope: Any, call_next: PublishNext) -> None:
        self.ids.append(envelope.id)
        await call_next(envelope)


def test_publish_middleware_still_runs_for_sync_sends(url: str) -> None:
    seen = Seen()
    hub = Hub(url, results="none", middleware=[seen])
    noop = hub.task(lambda: None, name="noop")
    try:
        assert [noop.delay().id for _ in range(3)] == seen.ids
    finally:
        hub.close()


def _send_from_child(url: str, out: Any) -> None:
    hub = Hub(url, results="none")
    out.put(hub.send_task("noop").id)


def test_a_forked_child_publishes_on_connections_of_its_own(url: str, tmp_path: Path) -> None:
    hub = Hub(url, results=f"sqlite:///{tmp_path / 'results.db'}")

    @hub.task(name="noop")
    def noop() -> str:
        return "ran"

    try:
        before = noop.delay()  # the parent's connections exist when it forks
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()

        def child() -> None:
            out.put(noop.delay().id)  # through the inherited hub

        proc = ctx.Process(target=child)
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
        child_id = out.get(timeout=10)
        after = noop.delay()  # the parent's connections still work
        drain(hub)
        assert [hub.bridge.run(hub.read_results([i]))[i].value
                for i in (before.id, child_id, after.id)] == ["ran"] * 3
    finally:
        hub.close()


def test_a_redis_that_goes_away_fails_a_sync_delay_with_transport_unavailable(
        tmp_path: Path) -> None:
    module = brokers.load("redis")
    brokers.require(module)
    prefix = "t" + uuid.uuid4().hex[:10]
    with Proxy(module.server()) as proxy:
        url = f"redis://{proxy.address}/0?prefix={prefix}&socket_timeout=2"
        hub = Hub(url, results="none")
        noop = hub.task(lambda: None, name="noop")
        try:
            noop.delay()
            proxy.cut()
            with pytest.raises(TransportUnavailable, match=r"redis at 127\.0\.0\.1:\d+"):
                noop.delay()
            proxy.restore()
            noop.delay()  # the pool reconnects
        finally:
            hub.close()
            asyncio.run(module.cleanup(f"redis://127.0.0.1:6379/0?prefix={prefix}"))


def test_a_loop_publishes_on_its_own_connections_from_its_first_send(url: str) -> None:
    hub = Hub(url, results="none")
    noop = hub.task(lambda: None, name="noop")
    noop.delay()  # the bridge loop's connections exist
    release = threading.Event()
    blocked = threading.Event()

    async def block_the_bridge() -> None:
        blocked.set()
        release.wait(30)

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        held = asyncio.run_coroutine_threadsafe(block_the_bridge(), hub.bridge.loop())
        try:
            assert await loop.run_in_executor(None, blocked.wait, 10)
            # the bridge thread is held: these can only go out on this loop's connections
            sent = await asyncio.wait_for(
                asyncio.gather(*(noop.delay_async() for _ in range(5))), 10)
        finally:
            release.set()
            await asyncio.wrap_future(held)
        assert len({r.id for r in sent}) == 5
        return hub._loop_clients[loop]

    try:
        owned = asyncio.run(main())
        assert owned.connector.current() is None  # closed as asyncio.run finished
    finally:
        release.set()
        hub.close()


@pytest.mark.parametrize("address", [
    "redis+cluster://127.0.0.1:7000,127.0.0.1:7001", "redis+sentinel://127.0.0.1:26379/main",
    "redis://127.0.0.1:6379/0?wait_replicas=1"])
def test_cluster_sentinel_and_wait_replicas_urls_have_no_sync_client(address: str) -> None:
    from hubbub._redis import RedisURL

    assert RedisURL.parse(address).sync_client(name="t") is None  # they publish on the loop


def test_a_hub_closed_then_used_again_connects_anew(url: str) -> None:
    hub = Hub(url, results="none")
    noop = hub.task(lambda: None, name="noop")
    try:
        noop.delay()
        hub.close()
        noop.delay()  # not on the connection close() closed
        assert drain(hub, timeout=30).processed == 2
    finally:
        hub.close()
