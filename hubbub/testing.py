"""Helpers for testing code that uses hubbub."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hubbub.hub import Hub
from hubbub.worker.loop import WorkerLoop
from hubbub.worker.pools.base import Pool


def drain(hub: Hub, queues: Sequence[str] | None = None, *, pool: Pool | None = None,
          timeout: float = 60.0) -> WorkerLoop:
    """Run a worker until ``queues`` have nothing ready, delayed or leased; returns it.

    Raises:
        TimeoutError: the queues did not empty within ``timeout`` seconds.
    """
    worker = WorkerLoop(hub, queues=queues, pool=pool, stop_when_idle=True, grace=timeout)
    asyncio.run(asyncio.wait_for(worker.run(), timeout))
    return worker


async def drain_async(hub: Hub, queues: Sequence[str] | None = None, *,
                      pool: Pool | None = None, timeout: float = 60.0) -> WorkerLoop:
    """``drain`` for async tests."""
    worker = WorkerLoop(hub, queues=queues, pool=pool, stop_when_idle=True, grace=timeout)
    await asyncio.wait_for(worker.run(), timeout)
    return worker
