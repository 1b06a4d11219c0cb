"""The producer's async path: ``await task.delay_async()`` from any event loop publishes on
that loop's own connections from its first send, task-sent events included, with no hop to
the hub's bridge thread; the connections close with the loop (issue #18).

Run against the embedded SQLite file and the shared Redis on 127.0.0.1:6379 (a key prefix
per test); an unreachable Redis skips locally and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from hubbub import ConfigurationError, Hub, TransportUnavailable
from hubbub._bridge import Bridge
from hubbub._client import LoopClient
from hubbub.testing import drain
from hubbub.transports import Transport
from hubbub.worker.pools import make_pool

T = TypeVar("T")


class CountingBridge(Bridge):
    """The real bridge, counting the coroutines handed to it from other loops."""

    def __init__(self) -> None:
        super().__init__()
        self.handed = 0

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        self.handed += 1
        return await super().run_async(coro)


def publishing_threads(hub: Hub) -> list[int]:
    """The thread of every ``Transport.publish`` made by the hub's transports from now on."""
    threads: list[int] = []
    opener = hub.open_transport

    def open_transport() -> Transport:
        transport = opener()
        publish = transport.publish

        async def recorded(items: Any) -> None:
            threads.append(threading.get_ident())
            await publish(items)

        transport.publish = recorded  # type: ignore[method-assign]
        return transport

    hub.open_transport = open_transport  # type: ignore[method-assign]
    return threads


def test_an_async_send_from_a_fresh_loop_never_hops_to_the_bridge_thread(url: str) -> None:
    hub = Hub(url, results="none", events=True)
    hub.bridge = bridge = CountingBridge()
    noop = hub.task(lambda: None, name="noop")
    threads = publishing_threads(hub)
    emitted: list[tuple[str, int]] = []
    hub.events.subscribe(lambda event: emitted.append((event.id, threading.get_ident())))
    try:
        async def main() -> tuple[int, list[str]]:
            ids = [(await noop.delay_async()).id for _ in range(3)]
            return threading.get_ident(), ids

        here, ids = asyncio.run(main())
        assert bridge.handed == 0
        assert bridge._loop is None  # the bridge thread was never even started
        assert threads == [here] * 3
        assert emitted == [(i, here) for i in ids]  # task-sent, from the sending loop
    finally:
        hub.close()


def test_task_sent_events_from_a_loop_reach_the_plane(url: str) -> None:
    hub = Hub(url, results="none", events=True)
    noop = hub.task(lambda: None, name="noop")

    async def main() -> LoopClient:
        await noop.delay_async()
        return hub._loop_clients[asyncio.get_running_loop()]

    try:
        own = asyncio.run(main())
        assert own.sent is not None
        assert not own.sent.opened  # its plane was opened on the loop, and closed with it
        assert not own.sent._outage.failing
    finally:
        hub.close()


def test_asyncio_run_again_and_again_leaves_no_connection_open(url: str) -> None:
    hub = Hub(url, results="none", events=True)
    noop = hub.task(lambda: None, name="noop")

    async def main() -> tuple[str, LoopClient]:
        sent = await noop.delay_async()
        return sent.id, hub._loop_clients[asyncio.get_running_loop()]

    try:
        runs = [asyncio.run(main()) for _ in range(3)]
        assert len({id for id, _ in runs}) == 3
        assert len({id(own) for _, own in runs}) == 3  # one per loop
        for _, own in runs:
            assert own.connector.current() is None  # closed as asyncio.run finished
            assert own.sent is not None
            assert not own.sent.opened
        gc.collect()  # an unclosed transport would warn here (warnings are errors)
        assert drain(hub, timeout=30).processed == 3
    finally:
        hub.close()


@pytest.mark.parametrize("connect", ["finishes", "is_cut_short_by_the_shutdown"])
def test_a_send_cancelled_while_connecting_leaves_no_connection_open(url: str,
                                                                     connect: str) -> None:
    hub = Hub(url, results="none")
    noop = hub.task(lambda: None, name="noop")
    opened: list[Transport] = []
    closed: list[Transport] = []
    opener = hub.open_transport

    def open_transport() -> Transport:  # connects, then holds until the test says
        transport = opener()
        connect_now, close_now = transport.connect, transport.close

        async def held_connect() -> None:
            await connect_now()
            opened.append(transport)
            connected.set()
            await go.wait()

        async def recorded_close() -> None:
            closed.append(transport)
            await close_now()

        transport.connect = held_connect  # type: ignore[method-assign]
        transport.close = recorded_close  # type: ignore[method-assign]
        return transport

    hub.open_transport = open_transport  # type: ignore[method-assign]

    async def main() -> None:
        sending = asyncio.ensure_future(noop.delay_async())
        await connected.wait()
        sending.cancel()  # its caller gives up; the connecting goes on
        with pytest.raises(asyncio.CancelledError):
            await sending
        if connect == "finishes":
            go.set()
            connecting = hub._loop_clients[asyncio.get_running_loop()].connector._connecting
            assert connecting is not None
            await connecting[1]

    connected, go = asyncio.Event(), asyncio.Event()
    try:
        asyncio.run(main())
        assert len(opened) == 1
        assert closed == opened  # by the loop's shutdown, whoever was waiting
        gc.collect()
    finally:
        hub.close()


def test_an_unreachable_broker_fails_an_async_send_with_transport_unavailable() -> None:
    hub = Hub("redis://127.0.0.1:1/0?prefix=unreachable&socket_timeout=2", results="none")
    noop = hub.task(lambda: None, name="noop")
    try:
        with pytest.raises(TransportUnavailable, match=r"redis at 127\.0\.0\.1:1"):
            asyncio.run(noop.delay_async())
        gc.collect()
    finally:
        hub.close()


def test_connected_closes_the_connections_it_opened_at_the_end_of_the_block(url: str) -> None:
    hub = Hub(url, results="none")
    noop = hub.task(lambda: None, name="noop")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with hub.connected(), hub.connected():  # nested: the same connections
            own = hub._loop_clients[loop]
            await noop.delay_async()
            assert own.connector.current() is not None
        assert own.connector.current() is None
        assert loop not in hub._loop_clients
        await noop.delay_async()  # a send after the block opens them again
        assert hub._loop_clients[loop] is not own

    try:
        asyncio.run(main())
    finally:
        hub.close()


def test_a_sync_send_still_goes_through_the_bridge_loop_when_it_must(url: str) -> None:
    hub = Hub(url, results="none", events=True)
    hub.bridge = bridge = CountingBridge()
    noop = hub.task(lambda: None, name="noop")
    try:
        noop.delay()
        assert bridge._loop is not None  # connected, and emitted task-sent, there
        assert hub._loop_clients.get(bridge.loop()) is None
    finally:
        hub.close()


def test_configure_is_refused_once_a_loop_has_sent(url: str) -> None:
    hub = Hub(url, results="none")
    noop = hub.task(lambda: None, name="noop")
    try:
        asyncio.run(noop.delay_async())  # the bridge never connected
        with pytest.raises(ConfigurationError, match="must come before the hub sends"):
            hub.configure(default_queue="other")
    finally:
        hub.close()


def test_an_async_task_on_a_loop_of_its_own_sends_through_the_bridge_not_a_new_connection(
        url: str) -> None:
    # A thread pool runs an async def task in an asyncio.run of its own, which ends with the
    # job: a connection opened for it would be opened and closed per job.
    hub = Hub(url, results="none")
    hub.bridge = bridge = CountingBridge()
    noop = hub.task(lambda: None, name="noop")
    opened: list[asyncio.AbstractEventLoop] = []
    own = hub._loop_client

    def counted(loop: asyncio.AbstractEventLoop) -> LoopClient:
        opened.append(loop)
        return own(loop)

    hub._loop_client = counted  # type: ignore[method-assign]

    @hub.task
    async def fan_out(n: int) -> None:
        for _ in range(n):
            await noop.delay_async()

    try:
        fan_out.delay(3)
        assert drain(hub, pool=make_pool("threads", 2), timeout=30).processed == 4
        assert bridge.handed == 3
        assert opened == []  # no connections of its own for a loop of one job
    finally:
        hub.close()
