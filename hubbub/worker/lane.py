"""``Lane``: some queues served by one pool, so that one worker can run several pools.

``hubbub worker --queue cpu=prefork:2 --queue io=async:500`` gives one lane per ``--queue``:
each lane fetches only its queues, as many as its own free slots plus its prefetch, and
runs them on its own pool, while the worker keeps one broker connection, one flusher and one
lease renewer for all of them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hubbub.errors import ConfigurationError
from hubbub.worker.pools import accepts, cannot_autoscale, make_pool
from hubbub.worker.pools.base import Pool

log = logging.getLogger("hubbub.worker")
if TYPE_CHECKING:
    from hubbub.middleware import Middleware
    from hubbub.worker.sources import Source

GROW_EVERY = 1.0  # seconds between two autoscale steps up
PREFETCH_FLOOR = 16  # deliveries a lane may hold beyond its free slots, whatever its pace
PREFETCH_HOLD = 0.01  # seconds of finished tasks, at the lane's pace, it may hold beyond that
PREFETCH_LOOK = 0.1  # seconds between two readings of that pace
SHRINK_AFTER = 5.0  # seconds a lane must be under half busy before it shrinks a step


@dataclass(eq=False)
class Lane:
    """Queues served by one pool, with its own slots and fetch budget.

    Args:
        queues: the queues this lane fetches.
        pool: where their tasks run.
        prefetch: deliveries held beyond free slots. Default: what the lane finishes in about
            ``PREFETCH_HOLD`` (10 ms) at its pace over the last ``PREFETCH_LOOK``, at least
            ``min(concurrency, 16)`` and at most ``concurrency``: a held delivery waits for
            a slot about 10 ms, however short the tasks are, and the shorter they are, the
            bigger the batches the worker fetches in (20,000 tasks of 50 ms at ``-c 1000``
            are fetched some 200 at a time instead of 16).
        autoscale: (min, max) concurrency; the lane grows while its queues have waiting work
            and every slot is busy, and shrinks while it is less than half busy. Only for a
            pool that is ``resizable``.
        source: where its queues are, when not on the hub's broker (the Celery bridge's
            ``hubbub.compat.celery``); its deliveries are read and settled by it.
        middleware: dispatch middleware for this lane only, inside the hub's.

    Raises:
        ConfigurationError: autoscale bounds out of order, or autoscale of a pool that
            cannot resize.
    """

    queues: list[str]
    pool: Pool
    prefetch: int | None = None
    autoscale: tuple[int, int] | None = None
    # -- Celery bridge (issue 17): a lane may consume another system's queues through its
    # own source, with dispatch middleware of its own (e.g. writing Celery's results).
    source: Source | None = None
    middleware: list[Middleware] = field(default_factory=list)
    # -- end Celery bridge
    held: int = 0
    running: int = 0
    room: asyncio.Event = field(default_factory=asyncio.Event)
    # Runners waiting for a slot, first come first served; a freed slot wakes exactly one.
    _waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    _grown_at: float = 0.0
    _quiet_since: float | None = None
    # Autoscale (on the fetcher) and remote control (on the responder) may resize at once:
    # one resize at a time, so a pool never sees two (prefork starts children in one).
    _resizing: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The default prefetch follows the lane's pace (see ``prefetch``): tasks finished since
    # ``_paced_at`` (monotonic seconds), read again every PREFETCH_LOOK.
    _paced: bool = False
    _finished: int = 0
    _paced_at: float = 0.0

    def __post_init__(self) -> None:
        if self.prefetch is None:
            self._paced, self._paced_at = True, time.monotonic()
            self.prefetch = min(self.pool.concurrency, PREFETCH_FLOOR)
        if self.autoscale is not None:
            low, high = self.autoscale
            if not 1 <= low <= high:
                raise ConfigurationError(f"autoscale needs 1 <= min <= max, got {low},{high}")
            if not self.pool.resizable:
                raise ConfigurationError(cannot_autoscale(self.pool.kind))

    @property
    def slots(self) -> int:
        """Jobs the pool takes at once: its concurrency and its window (``Pool.window``)."""
        return self.pool.concurrency + self.pool.window

    @property
    def budget(self) -> int:
        """How many more deliveries this lane may fetch now (0: wait for room)."""
        assert self.prefetch is not None
        if not self.queues:
            return 0  # every queue was cancelled (remote control): wait for one to be added
        if self._paced:
            self._pace()
        window = self.pool.window
        room = self.pool.concurrency + window + self.prefetch - self.held
        if self.running >= self.pool.concurrency and room <= (window + self.prefetch) // 2:
            # Every slot is busy and jobs wait behind them (prefetched here, or queued in a
            # child's window): fetch once half of that backlog has drained, in one batch,
            # rather than one delivery per finished task (a broker round trip each).
            return 0
        return max(0, room)

    def _pace(self) -> None:
        """Size the default prefetch to ``PREFETCH_HOLD`` of finished tasks at the pace of the
        last ``PREFETCH_LOOK`` seconds, within ``min(concurrency, 16)`` and ``concurrency``."""
        now = time.monotonic()
        elapsed = now - self._paced_at
        if elapsed < PREFETCH_LOOK:
            return
        concurrency = self.pool.concurrency
        paced = int(self._finished / elapsed * PREFETCH_HOLD)
        self.prefetch = min(concurrency, max(PREFETCH_FLOOR, paced))
        self._finished, self._paced_at = 0, now

    def wake(self) -> None:
        """Wake this lane's fetcher if it may fetch now (it also looks every second)."""
        if not self.room.is_set() and self.budget > 0:  # set already: nothing to work out
            self.room.set()

    def take_slot(self) -> bool:
        """Take a free slot now if there is one and nobody waits for one before us."""
        # The pool's own slots first: the window (Pool.window) is asked only when they are
        # all taken, since working it out walks the pool's children.
        if not self._waiters and (self.running < self.pool.concurrency
                                  or self.running < self.slots):
            self.running += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a free slot and take it (in arrival order)."""
        if self.take_slot():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # _hand_out took the slot for us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release_slot()  # handed a slot just as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release_slot(self) -> None:
        """Give back a slot taken with ``acquire()``; the longest waiter gets it."""
        self.running -= 1
        self._finished += 1
        self._hand_out()

    def _hand_out(self) -> None:
        while self._waiters and self.running < self.slots:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.running += 1
                waiter.set_result(None)

    async def autoscale_step(self) -> None:
        """Grow or shrink the pool by one step, per ``autoscale``; a no-op without it."""
        if self.autoscale is None:
            return
        low, high = self.autoscale
        now = time.monotonic()
        size = self.pool.concurrency
        waiting = self.held - self.running
        if self.running >= size and waiting > 0 and size < high:
            if now - self._grown_at >= GROW_EVERY:
                self._grown_at = now
                await self.resize(min(high, size + max(1, waiting)),
                                  f"autoscale: {waiting} waiting, every slot busy")
            self._quiet_since = None
        elif self.running < size / 2 and size > low:
            if self._quiet_since is None:
                self._quiet_since = now
            elif now - self._quiet_since >= SHRINK_AFTER:
                self._quiet_since = now
                await self.resize(size - 1, f"autoscale: {self.running} of {size} busy for "
                                            f"{SHRINK_AFTER:.0f}s")
        else:
            self._quiet_since = None

    # -- steering (autoscale and remote control) -------------------------------------------

    async def resize(self, concurrency: int, why: str) -> None:
        """Resize the pool to ``concurrency`` slots now, and log it in one line with ``why``.

        Raises:
            ConfigurationError: the pool is not ``resizable``.
            ValueError: ``concurrency`` below 1.
        """
        async with self._resizing:
            old = self.pool.concurrency
            await self.pool.resize(concurrency)
        log.info("lane %s: pool %s %d -> %d (%s)", ",".join(self.queues) or "(no queues)",
                 self.pool.kind, old, concurrency, why)
        self._hand_out()  # waiting runners take the new slots at once
        self.room.set()

    async def set_autoscale(self, bounds: tuple[int, int]) -> None:
        """Autoscale between ``bounds`` (min, max) from now on, resizing into them at once.

        Raises:
            ConfigurationError: bounds out of order, or a pool that cannot resize.
        """
        low, high = bounds
        if not 1 <= low <= high:
            raise ConfigurationError(f"autoscale needs 1 <= min <= max, got {low},{high}")
        if not self.pool.resizable:
            raise ConfigurationError(cannot_autoscale(self.pool.kind))
        was, self.autoscale = self.autoscale, (low, high)
        log.info("lane %s: autoscale %s -> %d..%d", ",".join(self.queues),
                 "off" if was is None else f"{was[0]}..{was[1]}", low, high)
        size = self.pool.concurrency
        if not low <= size <= high:
            await self.resize(min(high, max(low, size)), "new autoscale bounds")
        self.room.set()  # a fetcher waiting without autoscale would sleep long


def parse_lane(spec: str, **options: Any) -> Lane:
    """A lane from ``queues=pool[:concurrency]``, e.g. ``cpu=prefork:2`` or ``a,b=threads``.

    Raises:
        ConfigurationError: the spec is malformed or names an unknown pool.
    """
    queues, sep, pool_spec = spec.partition("=")
    if not sep or not queues.strip() or not pool_spec.strip():
        raise ConfigurationError(
            f"--queue {spec!r} should look like QUEUES=POOL[:N], e.g. cpu=prefork:2"
        )
    kind, _, count = pool_spec.partition(":")
    try:
        concurrency = int(count) if count else None
    except ValueError:
        raise ConfigurationError(f"--queue {spec!r}: {count!r} is not a whole number") from None
    names = [q.strip() for q in queues.split(",") if q.strip()]
    kind = kind.strip()
    # Options that only some pools take (e.g. --coroutines) go to the lanes that take them.
    usable = {k: v for k, v in options.items() if v is not None and accepts(kind, k)}
    return Lane(names, make_pool(kind, concurrency, **usable))
