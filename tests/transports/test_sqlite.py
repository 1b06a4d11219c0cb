"""The SQLite transport's own behaviour, beyond the conformance suite."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

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
