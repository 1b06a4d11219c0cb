"""The tasks ``hubbub demo`` sends: I/O-bound, CPU-bound, flaky (retried) and broken ones."""

from __future__ import annotations

import asyncio

from hubbub import Hub, current_task

hub = Hub()  # the demo sets $HUBBUB_BROKER to its own SQLite file


@hub.task(name="demo.fetch")
async def fetch(ms: int) -> int:
    """Pretend to wait on the network."""
    await asyncio.sleep(ms / 1000)
    return ms


@hub.task(name="demo.crunch")
def crunch(n: int) -> int:
    """Pure-Python CPU work."""
    return sum(i * i for i in range(n))


@hub.task(name="demo.flaky", retries=3, retry_backoff=0.2, retry_for=(ConnectionError,))
async def flaky(key: int) -> int:
    """Fails on its first attempt, succeeds when retried."""
    if current_task().retries == 0:
        raise ConnectionError(f"upstream {key} hung up")
    return key


@hub.task(name="demo.broken", retries=1, retry_backoff=0.2)
def broken(key: int) -> int:
    """Always fails: retried once, then dead-lettered."""
    raise ValueError(f"record {key} is corrupt")
