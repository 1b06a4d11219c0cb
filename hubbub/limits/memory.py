"""Limits kept in process memory, beside the memory result store (one state per store URL)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from hubbub.clock import Clock
from hubbub.limits.rate import Reservation, reserve
from hubbub.limits.store import LimitStore, Slot


@dataclass
class MemoryLimitState:
    """What the limits of one memory store hold; guarded by its own lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    unique: dict[str, tuple[str, float]] = field(default_factory=dict)  # key -> owner, expiry
    tats: dict[str, float] = field(default_factory=dict)  # rate key -> next free start
    rates: dict[str, str] = field(default_factory=dict)  # task -> override
    slots: dict[str, dict[str, float]] = field(default_factory=dict)  # key -> holder -> expiry


class MemoryLimits(LimitStore):
    """:class:`LimitStore` over a :class:`MemoryLimitState`, every step under its lock."""

    def __init__(self, state: MemoryLimitState, clock: Clock) -> None:
        self.state = state
        self.clock = clock

    async def claim_uniques(self, claims: Sequence[tuple[str, str, float]]) -> list[str]:
        now = self.clock.time()
        holders = []
        with self.state.lock:
            for key, owner, ttl in claims:
                held = self.state.unique.get(key)
                if held is None or held[1] <= now:
                    held = self.state.unique[key] = (owner, now + ttl)
                holders.append(held[0])
        return holders

    async def release_unique(self, keys: Sequence[tuple[str, str]]) -> None:
        with self.state.lock:
            for key, owner in keys:
                held = self.state.unique.get(key)
                if held is not None and held[0] == owner:
                    del self.state.unique[key]

    async def reserve(self, key: str, *, interval: float, horizon: float,
                      lead: float = 0.0) -> Reservation:
        with self.state.lock:
            answer, tat = reserve(self.state.tats.get(key), self.clock.time(), interval, horizon,
                                  lead)
            if tat is not None:
                self.state.tats[key] = tat
            return answer

    async def set_rate(self, task: str, rate: str | None) -> None:
        with self.state.lock:
            if rate is None:
                self.state.rates.pop(task, None)
            else:
                self.state.rates[task] = rate

    async def rates(self) -> dict[str, str]:
        with self.state.lock:
            return dict(self.state.rates)

    async def acquire_slot(self, key: str, holder: str, *, limit: int, ttl: float) -> bool:
        now = self.clock.time()
        with self.state.lock:
            held = self.state.slots.setdefault(key, {})
            for gone in [h for h, until in held.items() if until <= now]:
                del held[gone]
            if holder not in held and len(held) >= limit:
                return False
            held[holder] = now + ttl
            return True

    async def renew_slots(self, slots: Sequence[Slot], *, ttl: float) -> None:
        now = self.clock.time()
        with self.state.lock:
            for key, holder in slots:
                held = self.state.slots.get(key, {})
                if held.get(holder, now) > now:
                    held[holder] = now + ttl

    async def release_slots(self, slots: Sequence[Slot]) -> None:
        with self.state.lock:
            for key, holder in slots:
                held = self.state.slots.get(key)
                if held is not None:
                    held.pop(holder, None)
                    if not held:
                        del self.state.slots[key]
