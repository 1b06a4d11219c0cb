"""The in-process plane: a broadcast seen by every subscriber from the moment it opened."""

from __future__ import annotations

import asyncio

from hubbub.control.plane import MemoryPlane


async def test_every_subscriber_sees_what_is_published_after_it_opened() -> None:
    plane = MemoryPlane("test-broadcast")
    await plane.publish("events", [b"before"])
    first, second = await plane.subscribe("events"), await plane.subscribe("events")
    await plane.publish("events", [b"a", b"b"])
    assert await first.read(wait=1) == [b"a", b"b"]
    assert await second.read(wait=1) == [b"a", b"b"]
    assert await first.read(wait=0) == []


async def test_a_reader_waits_for_a_message_published_from_another_thread() -> None:
    plane = MemoryPlane("test-thread")
    sub = await plane.subscribe("control")
    reader = asyncio.create_task(sub.read(wait=5))
    await asyncio.to_thread(asyncio.run, MemoryPlane("test-thread").publish("control", [b"x"]))
    assert await asyncio.wait_for(reader, 5) == [b"x"]


async def test_a_lagging_reader_keeps_only_the_newest_maxlen() -> None:
    plane = MemoryPlane("test-maxlen", maxlen=3)
    sub = await plane.subscribe("events")
    await plane.publish("events", [str(i).encode() for i in range(5)])
    assert await sub.read(wait=0) == [b"2", b"3", b"4"]
