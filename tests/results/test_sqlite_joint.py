"""The SQLite store on the broker's own file writes a flush's records and the acks that
follow them in one transaction: both land, or neither does; on another file it declines
and writes nothing (the worker then stores, then acks, as with any other store)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hubbub.errors import TransportUnavailable
from hubbub.results import ResultRecord, State
from hubbub.results.sqlite import SQLiteResults
from hubbub.transports.base import Delivery, Outgoing
from hubbub.transports.sqlite import SQLiteTransport


@dataclass
class Site:
    transport: SQLiteTransport
    results: SQLiteResults
    delivery: Delivery


async def _site(broker: Path, store: Path) -> Site:
    transport = SQLiteTransport(f"sqlite:///{broker}")
    results = SQLiteResults(f"sqlite:///{store}")
    await transport.connect()
    await results.connect()
    await transport.publish([Outgoing("default", b"body", "job-1")])
    [delivery] = await transport.fetch(["default"], limit=1, lease=30, wait=0)
    return Site(transport, results, delivery)


@pytest.fixture
async def same_file(tmp_path: Path) -> AsyncIterator[Site]:
    site = await _site(tmp_path / "hub.db", tmp_path / "hub.db")
    try:
        yield site
    finally:
        await site.results.close()
        await site.transport.close()


async def _queued(transport: SQLiteTransport) -> int:
    [stats] = await transport.stats(["default"])
    return stats.ready + stats.leased + stats.delayed


async def test_records_and_acks_on_the_brokers_file_are_written_together(
        same_file: Site) -> None:
    record = ResultRecord("job-1", State.SUCCESS, "t", 5)
    assert await same_file.results.store_and_ack([record], ttl=60,
                                                 transport=same_file.transport,
                                                 deliveries=[same_file.delivery])
    stored = (await same_file.results.get(["job-1"]))["job-1"]
    assert (stored.state, stored.value) == (State.SUCCESS, 5)
    assert await _queued(same_file.transport) == 0


async def test_a_failed_joint_write_leaves_neither_record_nor_ack(
        same_file: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(conn: sqlite3.Connection, _deliveries: object) -> None:
        conn.execute("DELETE FROM no_such_table")  # SQLite refuses it, after the records

    monkeypatch.setattr(same_file.transport, "ack_in", refuse)
    with pytest.raises(TransportUnavailable):
        await same_file.results.store_and_ack(
            [ResultRecord("job-1", State.SUCCESS, "t", 5)], ttl=60,
            transport=same_file.transport, deliveries=[same_file.delivery])
    assert await same_file.results.get(["job-1"]) == {}
    assert await _queued(same_file.transport) == 1


async def test_a_store_on_another_file_declines_and_writes_nothing(tmp_path: Path) -> None:
    site = await _site(tmp_path / "broker.db", tmp_path / "results.db")
    try:
        assert not await site.results.store_and_ack(
            [ResultRecord("job-1", State.SUCCESS, "t", 5)], ttl=60,
            transport=site.transport, deliveries=[site.delivery])
        assert await site.results.get(["job-1"]) == {}
        assert await _queued(site.transport) == 1
    finally:
        await site.results.close()
        await site.transport.close()
