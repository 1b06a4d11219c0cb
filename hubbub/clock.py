"""Time, behind one small seam so that tests can drive leases, backoff and cron."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime


class Clock:
    """The real clock: wall time for instants shared between processes, monotonic for durations."""

    def time(self) -> float:
        """Seconds since the epoch (UTC); used for ETAs and leases stored in a broker."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; used for durations inside one process."""
        return time.monotonic()

    def now(self) -> datetime:
        """The current instant as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock(Clock):
    """A clock that moves only when told to; ``sleep`` advances it at once."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)


SYSTEM_CLOCK = Clock()
