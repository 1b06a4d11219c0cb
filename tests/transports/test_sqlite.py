"""The SQLite transport's own behaviour, beyond the conformance suite."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import pytest

from hubbub import _sqlite
from hubbub.transports import Outgoing, Transport, open_transport


async def test_four_consumers_sharing_one_connection_ack_concurrently(tmp_path: Path) -> None:
    # Every transport on one file in one process shares one connection. A cursor handed back
    # to the event loop used to be finalised there while the database thread ran the same
    # cached statement for another consumer: "bad parameter or other API misuse" on ack.
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    consumers = [open_transport(url) for _ in range(4)]
    for t in consumers:
        await t.connect()
    try:
        for _ in range(20):
            await consumers[0].publish(
                [Outgoing("q", b"x", uuid.uuid4().hex, 0, None) for _ in range(100)])
            seen: list[str] = []

            async def consume(t: Transport, seen: list[str] = seen) -> None:
                misses = 0
                while misses < 2:
                    got = await t.fetch(["q"], limit=2, lease=30, wait=0.05)
                    misses = 0 if got else misses + 1
                    seen.extend(d.id for d in got)
                    await t.ack(got)

            await asyncio.wait_for(asyncio.gather(*(consume(t) for t in consumers)), 60)
            assert len(seen) == len(set(seen)) == 100
    finally:
        for t in consumers:
            await t.close()


_PUBLISH_FROM_ANOTHER_PROCESS = """
import asyncio, sys
from hubbub.transports import Outgoing, open_transport

async def main() -> None:
    t = open_transport(sys.argv[1])
    await t.connect()
    await t.publish([Outgoing("q", b"from-afar", "m-1", 0, None)])
    await t.close()

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
async def test_waiting_fetch_is_woken_by_another_process_publishing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fetch waits on the file's inotify watch: the commit of another process wakes it.
    # With the safety-net look pushed past the fetch's wait, only that wake-up can deliver
    # the message before wait_for gives up.
    monkeypatch.setattr(_sqlite, "WATCHED_LOOK", 120.0)
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    consumer = open_transport(url)
    await consumer.connect()
    try:
        fetching = asyncio.ensure_future(consumer.fetch(["q"], limit=1, lease=30, wait=60))
        await asyncio.sleep(0)  # the fetch starts waiting (no timing rides on this)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _PUBLISH_FROM_ANOTHER_PROCESS, url)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        got = await asyncio.wait_for(fetching, 30)
        assert [(d.id, d.body) for d in got] == [("m-1", b"from-afar")]
        await consumer.ack(got)
    finally:
        await consumer.close()


async def test_waiting_fetch_sees_another_process_publish_without_inotify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where inotify is missing the wait polls data_version, less often the longer it waits.
    monkeypatch.setattr(_sqlite, "open_watch", lambda _path: None)
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    consumer = open_transport(url)
    await consumer.connect()
    try:
        fetching = asyncio.ensure_future(consumer.fetch(["q"], limit=1, lease=30, wait=30))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _PUBLISH_FROM_ANOTHER_PROCESS, url)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        got = await asyncio.wait_for(fetching, 30)
        assert [d.id for d in got] == ["m-1"]
    finally:
        await consumer.close()
