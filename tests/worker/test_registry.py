"""The worker's registry entry, in process: written on start, renewed with its counters every
heartbeat, deleted on a clean stop, and a store that fails never stops the worker."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

import hubbub
from hubbub import Hub
from hubbub.control import Registry, WorkerInfo
from hubbub.worker import WorkerLoop


async def _until(check: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_the_entry_counts_processed_and_failed_and_is_gone_after_a_clean_stop(
    hub: Hub,
) -> None:
    @hub.task
    def ok() -> int:
        return 1

    @hub.task
    def bad() -> None:
        raise RuntimeError("kaput")

    ok.delay()
    ok.delay()
    bad.delay()

    async def main() -> None:
        worker = WorkerLoop(hub, queues=["default", "other"], name="w-in", heartbeat=0.1)
        running = asyncio.create_task(worker.run())
        results = hub.open_results()
        assert results is not None
        await results.connect()
        registry = Registry(results)
        try:
            seen: list[WorkerInfo] = []

            async def counted() -> bool:
                seen[:] = await registry.workers()
                return bool(seen) and seen[0].processed == 3

            await _until(counted)
            [info] = seen
            assert (info.name, info.failed, info.running) == ("w-in", 1, 0)
            assert info.lanes[0].queues == ("default", "other")
            assert info.version == hubbub.__version__
            assert info.pid == os.getpid()
            assert not info.damaged
            worker.stop()
            await asyncio.wait_for(running, 10)
            assert await registry.workers() == []  # at once, not after three beats
        finally:
            running.cancel()
            await results.close()

    asyncio.run(main())


def test_a_failing_registry_write_never_stops_the_worker(
    hub: Hub, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hubbub.results.sqlite import SQLiteResults

    async def broken(self: Any, name: str, info: dict[str, Any], *, ttl: float) -> None:
        raise OSError("the store is down")

    monkeypatch.setattr(SQLiteResults, "heartbeat", broken)

    @hub.task
    def ok() -> int:
        return 1

    results = [ok.delay() for _ in range(3)]
    worker = WorkerLoop(hub, heartbeat=0.05, stop_when_idle=True)
    asyncio.run(asyncio.wait_for(worker.run(), 30))
    assert worker.processed == 3
    assert [r.get(timeout=5) for r in results] == [1, 1, 1]


def test_a_malformed_entry_is_read_as_damaged_and_never_raises() -> None:
    for data in (None, [], "x", {"pid": "nine", "lanes": [1, {"queues": "q"}], "load": [1]},
                 {"heartbeat_at": float("inf"), "pid": float("nan")}):
        info = WorkerInfo.from_json("w", data)
        assert info.name == "w"
        assert info.damaged
    good = WorkerInfo("w", "h", 1, "0.1.0", (), 1.0, 2.0, 3, 1, 0, 12.5, (0.1, 0.2, 0.3))
    assert WorkerInfo.from_json("w", good.to_json()) == good
    assert not WorkerInfo.from_json("w", good.to_json()).damaged
