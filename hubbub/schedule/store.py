"""The beat's shared state: one leader lease, and the last claimed slot of each entry.

Every beat process of an application opens the same store (the hub's result store), so the
state survives any one process. Two rules, each kept atomically by every implementation:

- **Lease.** At most one owner holds the lease while it is live. ``acquire`` takes it when
  it is free, expired or already the caller's; ``renew`` extends it only for its holder;
  ``release`` drops it only for its holder.
- **Claim.** ``claim_slot(entry, slot, owner)`` succeeds only if ``owner`` holds a live lease
  *and* the entry's last claimed slot is older than ``slot``; it then records the slot as
  claimed but not yet published. So even two processes that both believe they lead cannot
  both claim one slot, nor go back in time.

After publishing, the leader calls ``mark_published``. A slot left claimed but unpublished
(its leader died in between) is published again by the next leader, with the same task id.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.errors import ConfigurationError
from hubbub.transports import load_plugin

# scheme -> (module, class, extra that provides its driver)
SCHEMES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("hubbub.schedule.stores.memory", "MemoryScheduleStore", None),
    "sqlite": ("hubbub.schedule.stores.sqlite", "SQLiteScheduleStore", None),
    "redis": ("hubbub.schedule.stores.redis", "RedisScheduleStore", "redis"),
    "rediss": ("hubbub.schedule.stores.redis", "RedisScheduleStore", "redis"),
    "redis+cluster": ("hubbub.schedule.stores.redis", "RedisScheduleStore", "redis"),
    "rediss+cluster": ("hubbub.schedule.stores.redis", "RedisScheduleStore", "redis"),
    "redis+sentinel": ("hubbub.schedule.stores.redis", "RedisScheduleStore", "redis"),
    "rediss+sentinel": ("hubbub.schedule.stores.redis", "RedisScheduleStore", "redis"),
}


@dataclass(frozen=True, slots=True)
class Lease:
    """Who leads, and until when (epoch seconds)."""

    owner: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class SlotState:
    """The last slot claimed for one entry.

    Attributes:
        slot: the slot (epoch seconds).
        published: its task was sent (or the slot was only a marker: skipped, or where a new
            entry starts).
        owner: the beat that claimed it.
        claimed_at: when (epoch seconds).
    """

    slot: float
    published: bool
    owner: str
    claimed_at: float


class ScheduleStore(abc.ABC):
    """Leader lease and slot claims. One instance belongs to one event loop."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections and create what is missing."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    async def acquire(self, owner: str, ttl: float) -> bool:
        """Take the lease for ``ttl`` seconds if it is free, expired or already ``owner``'s.

        Returns:
            True if ``owner`` now holds it.
        """

    @abc.abstractmethod
    async def renew(self, owner: str, ttl: float) -> bool:
        """Extend ``owner``'s live lease to ``ttl`` seconds from now.

        Returns:
            False if ``owner`` no longer holds it (it expired, or another took it).
        """

    @abc.abstractmethod
    async def release(self, owner: str) -> None:
        """Drop the lease if ``owner`` holds it, so another beat takes over at once."""

    @abc.abstractmethod
    async def leader(self) -> Lease | None:
        """The live lease, or None."""

    @abc.abstractmethod
    async def claim_slot(self, entry: str, slot: float, owner: str) -> bool:
        """Record ``slot`` as ``entry``'s last claimed slot, unpublished.

        Atomically: only if ``owner`` holds a live lease and the last claimed slot of
        ``entry`` is older than ``slot`` (or there is none).

        Returns:
            True if this call claimed the slot.
        """

    @abc.abstractmethod
    async def mark_published(self, entry: str, slot: float) -> None:
        """Record that ``slot`` of ``entry`` was published (if it is still the last claim)."""

    @abc.abstractmethod
    async def last_slots(self) -> dict[str, SlotState]:
        """The last claimed slot of every entry that has one."""


def open_store(url: str | None, *, clock: Clock = SYSTEM_CLOCK) -> ScheduleStore:
    """The schedule store kept in the result store at ``url`` (not yet connected).

    Args:
        url: the hub's result store URL (``hub.settings.results``), or None.
        clock: the time source for leases and claims (SQLite and memory).

    Raises:
        ConfigurationError: no result store, or one the beat cannot keep state in, or a
            missing extra.
    """
    if url is None:
        raise ConfigurationError(
            "the beat keeps its schedule state in the result store, and this hub has none; "
            "pass results='redis://...' or results='sqlite:///hubbub.db' to Hub()")
    cls = load_plugin(SCHEMES, url, "schedule store")
    store: ScheduleStore = cls(url, clock=clock)
    return store
