"""``LimitStore``: the store side of unique jobs and fleet-wide rate and concurrency limits.

Each result store that can hold limits hands one out (``ResultBackend.limits()``), living on
the result store's own connection. Every method is one atomic step in the store, so any
number of producers and workers can call them at once.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from hubbub.limits.rate import Reservation

Slot = tuple[str, str]
"""A concurrency slot: (limit key, holder), the holder being the task id."""


class LimitStore(abc.ABC):
    """Unique keys, rate reservations and concurrency slots, kept in a result store."""

    # -- unique jobs --

    @abc.abstractmethod
    async def claim_uniques(self, claims: Sequence[tuple[str, str, float]]) -> list[str]:
        """For each (key, owner, ttl), in order and in one round trip: claim ``key`` for
        task ``owner`` for ``ttl`` seconds, unless a live claim exists (an earlier one of the
        same batch included).

        Returns:
            For each claim, the task id that holds its key after it: ``owner`` if it was
            claimed, else the holder's.
        """

    async def claim_unique(self, key: str, owner: str, *, ttl: float) -> str:
        """One claim of :meth:`claim_uniques`; the key's holder after it."""
        [holder] = await self.claim_uniques([(key, owner, ttl)])
        return holder

    @abc.abstractmethod
    async def release_unique(self, keys: Sequence[tuple[str, str]]) -> None:
        """Delete each (key, owner) claim, only where the key still belongs to that owner."""

    # -- rate limits --

    @abc.abstractmethod
    async def reserve(self, key: str, *, interval: float, horizon: float,
                      lead: float = 0.0) -> Reservation:
        """Reserve the next start of ``key``'s rate (one every ``interval`` seconds, none
        sooner than ``lead`` seconds from now) if it is within ``horizon`` seconds (see
        :func:`hubbub.limits.rate.reserve`)."""

    @abc.abstractmethod
    async def set_rate(self, task: str, rate: str | None) -> None:
        """Override ``task``'s rate limit for the fleet (None: back to its own option)."""

    @abc.abstractmethod
    async def rates(self) -> dict[str, str]:
        """The rate overrides, by task name."""

    # -- concurrency limits --

    @abc.abstractmethod
    async def acquire_slot(self, key: str, holder: str, *, limit: int, ttl: float) -> bool:
        """Take one of ``limit`` slots of ``key`` for ``ttl`` seconds (renewed by
        :meth:`renew_slots`). A holder that has one already keeps it.

        Returns:
            Whether ``holder`` holds a slot now.
        """

    @abc.abstractmethod
    async def renew_slots(self, slots: Sequence[Slot], *, ttl: float) -> None:
        """Extend held slots for another ``ttl`` seconds (an expired one is not revived)."""

    @abc.abstractmethod
    async def release_slots(self, slots: Sequence[Slot]) -> None:
        """Give slots back."""
