"""The SQLite plane keeps its table in a file of its own, next to the broker's, that every
reader finds from the broker's URL, and its writes never wait for the broker's write lock."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest

from hubbub import Hub
from hubbub.control.planes import open_plane
from hubbub.control.planes import sqlite as sqlite_plane
from hubbub.control.planes.sqlite import SQLitePlane, _SQLiteSubscription, plane_path

WRITER = """
import asyncio, sys
from hubbub.control.planes import open_plane

async def main() -> None:
    async with open_plane(sys.argv[1]) as plane:
        await plane.publish("events", [b"from another process", b"x" * 5000])

asyncio.run(main())
"""


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}


def test_the_plane_file_is_the_broker_file_with_plane_added(tmp_path: Path) -> None:
    assert plane_path("sqlite:///shop.db") == "shop.db-plane"
    assert plane_path(f"sqlite:///{tmp_path / 'a b.db'}?dead_max=5") == (
        f"{tmp_path / 'a b.db'}-plane")
    plane = open_plane("beanstalk://127.0.0.1:11300", f"sqlite:///{tmp_path / 'r.db'}")
    assert isinstance(plane, SQLitePlane)
    assert plane.db.path == f"{tmp_path / 'r.db'}-plane"


def test_the_plane_lives_in_its_own_file_and_the_broker_file_has_no_plane_table(
        tmp_path: Path) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'shop.db'}", results="none")

    async def publish() -> None:
        async with hub.open_plane() as plane:
            await plane.publish("events", [b"one"])

    try:
        hub.send_task("noop")  # the broker's file exists, with its own tables
        asyncio.run(publish())
    finally:
        hub.close()
    assert "hubbub_plane" in tables(tmp_path / "shop.db-plane")
    assert "hubbub_plane" not in tables(tmp_path / "shop.db")


async def test_a_reader_opened_from_the_broker_url_sees_another_process_writes(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    async with open_plane(url) as plane:
        sub = await plane.subscribe("events")
        writer = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, url)
        assert await writer.wait() == 0
        got: list[bytes] = []
        for _ in range(20):
            got += await sub.read(wait=0.5)
            if len(got) >= 2:
                break
    assert got == [b"from another process", b"x" * 5000]


async def test_a_plane_write_does_not_wait_for_the_broker_write_lock(tmp_path: Path) -> None:
    broker = tmp_path / "shop.db"
    holder = sqlite3.connect(broker, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # another process's long write on the broker's file
    try:
        async with open_plane(f"sqlite:///{broker}") as plane:
            sub = await plane.subscribe("control")
            await asyncio.wait_for(plane.publish("control", [b"ping"]), 5)
            assert await sub.read(wait=5) == [b"ping"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()



async def test_a_waiting_reader_looks_at_its_channel_only_after_commits_and_gap_apart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that waits sleeps on the plane file's commits (or polls its data_version where
    there is no inotify): it looks at its channel's table once before the wait and once at
    its end, not every few milliseconds, so an idle worker's control reads cost little. On a
    busy plane (other channels' commits) its looks are at least GAP apart, not one per
    commit, and a message for it still arrives."""
    async with open_plane(f"sqlite:///{tmp_path / 'shop.db'}") as plane:
        sub = await plane.subscribe("control")
        assert isinstance(sub, _SQLiteSubscription)
        looks = 0
        newer = _SQLiteSubscription._newer

        def counted(self: _SQLiteSubscription,
                    conn: sqlite3.Connection) -> list[tuple[int, bytes | None]]:
            nonlocal looks
            looks += 1
            return newer(self, conn)

        monkeypatch.setattr(_SQLiteSubscription, "_newer", counted)
        assert await sub.read(wait=0.6) == []
        assert looks <= 3

        gap = 0.2  # the module's GAP made long, so that the bound holds on a slow machine
        monkeypatch.setattr(sqlite_plane, "GAP", gap)
        looks = 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = asyncio.create_task(sub.read(wait=30))
        for _ in range(40):  # 40 commits to another channel while the read waits
            await plane.publish("events", [b"not for control"])
            await asyncio.sleep(0.005)
        busy, during = loop.time() - started, looks
        await plane.publish("control", [b"ping"])
        assert await asyncio.wait_for(waiting, 15) == [b"ping"]
        assert during <= busy / gap + 3
        assert during < 20  # 40 commits: one look each would be 40
