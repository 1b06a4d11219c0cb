"""The SQLite transport's own behaviour, beyond the conformance suite."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from hubbub import _sqlite
from hubbub.clock import FakeClock
from hubbub.transports import Outgoing, Transport, open_transport
from hubbub.transports.sqlite import SQLiteTransport


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


async def test_a_claim_that_finds_nothing_due_says_when_the_next_message_comes_due(
    tmp_path: Path,
) -> None:
    # Messages due at once are stored with visible_at 0 and left out of the index of later
    # rows; the leased and the delayed ones are in it, and the earliest of them is the answer.
    clock = FakeClock()
    t = SQLiteTransport(f"sqlite:///{tmp_path / 'broker.db'}", clock=clock)
    await t.connect()
    try:
        now = clock.time()
        await t.publish([Outgoing("q", b"now", "m-now", 0, None),
                         Outgoing("q", b"later", "m-later", 0, now + 50)])
        got, due = await t.db.call(lambda c: t._claim_or_due(c, ["q"], 10, 80.0))
        assert ([d.id for d in got], due) == (["m-now"], None)
        got, due = await t.db.call(lambda c: t._claim_or_due(c, ["q"], 10, 80.0))
        assert (got, due) == ([], now + 50)  # the delayed one, before the lease's end at +80
        clock.advance(60)
        [later] = await t.fetch(["q"], limit=10, lease=10, wait=0)
        assert later.id == "m-later"
        got, due = await t.db.call(lambda c: t._claim_or_due(c, ["q"], 10, 80.0))
        assert (got, due) == ([], now + 70)  # now only leases: m-later's ends first
    finally:
        await t.close()


async def test_the_wal_is_checkpointed_into_the_file_off_the_committing_thread(
    tmp_path: Path,
) -> None:
    # The committing connection has SQLite's automatic checkpoint off (it would wait for two
    # fsyncs inside a producer's delay()); the process's checkpoint thread copies the WAL
    # into the database file instead. Without it the file would never grow.
    path = tmp_path / "broker.db"
    t = open_transport(f"sqlite:///{path}")
    await t.connect()
    try:
        publisher = t.sync_publisher()
        assert publisher is not None
        size = path.stat().st_size
        for i in range(_sqlite.CHECKPOINT_AFTER + 1):
            publisher.publish([Outgoing("q", b"x" * 2000, f"m-{i}", 0, None)])
        deadline = time.monotonic() + 30
        while path.stat().st_size <= size and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # waits for a condition, bounded by the deadline
        assert path.stat().st_size > size
        [stats] = await t.stats(["q"])
        assert stats.ready == _sqlite.CHECKPOINT_AFTER + 1
    finally:
        await t.close()


async def test_the_wal_starts_over_during_a_long_burst_of_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpoint beside a busy writer never copies the whole WAL, and only a whole one
    # lets the WAL start over: every RESTART_AFTER commits the committing thread runs one
    # itself, so a long burst reuses the start of the file instead of growing it.
    monkeypatch.setattr(_sqlite, "CHECKPOINT_AFTER", 10)
    monkeypatch.setattr(_sqlite, "RESTART_AFTER", 40)
    path = tmp_path / "broker.db"
    t = open_transport(f"sqlite:///{path}")
    await t.connect()
    try:
        publisher = t.sync_publisher()
        assert publisher is not None
        for i in range(1000):
            publisher.publish([Outgoing("q", b"x" * 2000, f"m-{i}", 0, None)])
        # 1000 commits of two pages or more would make a WAL of 8 MB or more; 50 of them,
        # the most it holds between two restarts here, about 400 KB.
        assert Path(f"{path}-wal").stat().st_size < 2_000_000
        [stats] = await t.stats(["q"])
        assert stats.ready == 1000
    finally:
        await t.close()


async def test_writes_wait_out_another_connection_holding_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shared connection has SQLite's busy handler off (it sleeps 1, 2, 5, 10 ms between
    # tries: the tail of the pickup latency); _when_free tries again instead. A producer's
    # insert and a write on the database thread both wait for the lock, then both land.
    path = tmp_path / "broker.db"
    t = open_transport(f"sqlite:///{path}")
    await t.connect()
    met_lock = threading.Event()
    busy = _sqlite._busy

    def spy(exc: sqlite3.OperationalError) -> bool:
        if busy(exc):
            met_lock.set()
            return True
        return False

    monkeypatch.setattr(_sqlite, "_busy", spy)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        publisher = t.sync_publisher()
        assert publisher is not None
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO hubbub_messages (id, queue, priority, body, visible_at)"
                      " VALUES ('m-other', 'q', 0, x'00', 0)")
        blocked = asyncio.gather(
            asyncio.to_thread(publisher.publish, [Outgoing("q", b"x", "m-sync", 0, None)]),
            t.publish([Outgoing("q", b"x", "m-async", 0, None)]),
        )
        assert await asyncio.to_thread(met_lock.wait, 30)
        other.execute("COMMIT")
        await asyncio.wait_for(blocked, 30)
        got = await t.fetch(["q"], limit=10, lease=30, wait=0)
        assert sorted(d.id for d in got) == ["m-async", "m-other", "m-sync"]
    finally:
        other.close()
        await t.close()
