"""In-process schedule state for tests: shared by every store opened with the same URL."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.schedule.store import Lease, ScheduleStore, SlotState


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    lease: Lease | None = None
    slots: dict[str, SlotState] = field(default_factory=dict)


_STATES: dict[str, _State] = {}
_STATES_LOCK = threading.Lock()


class MemoryScheduleStore(ScheduleStore):
    """The lease and the claims in a dict behind a lock; time from ``clock``.

    Args:
        url: ``memory://name``; stores with the same URL share their state.
        clock: the time source for lease expiry (a ``FakeClock`` in tests).
    """

    def __init__(self, url: str = "memory://", *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        with _STATES_LOCK:
            self._state = _STATES.setdefault(url, _State())

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _live(self) -> Lease | None:
        lease = self._state.lease
        return lease if lease is not None and lease.expires_at > self.clock.time() else None

    async def acquire(self, owner: str, ttl: float) -> bool:
        with self._state.lock:
            lease = self._live()
            if lease is not None and lease.owner != owner:
                return False
            self._state.lease = Lease(owner, self.clock.time() + ttl)
            return True

    async def renew(self, owner: str, ttl: float) -> bool:
        with self._state.lock:
            lease = self._live()
            if lease is None or lease.owner != owner:
                return False
            self._state.lease = Lease(owner, self.clock.time() + ttl)
            return True

    async def release(self, owner: str) -> None:
        with self._state.lock:
            if self._state.lease is not None and self._state.lease.owner == owner:
                self._state.lease = None

    async def leader(self) -> Lease | None:
        with self._state.lock:
            return self._live()

    async def claim_slot(self, entry: str, slot: float, owner: str) -> bool:
        with self._state.lock:
            lease = self._live()
            last = self._state.slots.get(entry)
            if lease is None or lease.owner != owner or (last is not None and last.slot >= slot):
                return False
            self._state.slots[entry] = SlotState(slot, False, owner, self.clock.time())
            return True

    async def mark_published(self, entry: str, slot: float) -> None:
        with self._state.lock:
            last = self._state.slots.get(entry)
            if last is not None and last.slot == slot:
                self._state.slots[entry] = SlotState(slot, True, last.owner, last.claimed_at)

    async def last_slots(self) -> dict[str, SlotState]:
        with self._state.lock:
            return dict(self._state.slots)
