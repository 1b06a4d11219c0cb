"""``Held``: a delivery the worker holds; ``HeldSet``: all of them, and poison isolation.

A delivery is held from admission until it is settled or given back. The set keeps each
lane's count, wakes fetchers when room frees, and runs a message on its last allowed
delivery alone (see :meth:`HeldSet.alone`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hubbub.message import Envelope
    from hubbub.results.history import TaskNote
    from hubbub.task import Task
    from hubbub.transports.base import Delivery
    from hubbub.worker.lane import Lane

log = logging.getLogger("hubbub.worker")


@dataclass(eq=False, slots=True)
class Held:
    """A delivery the worker holds, and what became of it."""

    delivery: Delivery
    envelope: Envelope
    task: Task[Any, Any]
    lane: Lane
    started_at: float | None = None
    runner: asyncio.Future[Any] | None = None  # its task, or its pool's outcome (loop)
    admitted_at: float = 0.0  # monotonic: when admission last read its stored state
    terminating: bool = False  # its pool was asked to stop it (revoked with terminate)
    note: TaskNote | None = None  # -- history: made once, for every record of this delivery


class HeldSet:
    """The deliveries a worker holds, by identity."""

    def __init__(self) -> None:
        self._held: dict[int, Held] = {}
        self._alone: Held | None = None  # a last-chance delivery running by itself
        self._changed = asyncio.Event()  # set whenever a held delivery leaves
        self._fetches = 0  # fetches under way: what they claim must not run beside _alone

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[Held]:
        return iter(list(self._held.values()))

    def __contains__(self, held: object) -> bool:
        return id(held) in self._held

    @property
    def isolating(self) -> bool:
        """True while a message on its last delivery runs alone: fetch nothing."""
        return self._alone is not None

    def add(self, held: Held) -> None:
        self._held[id(held)] = held
        held.lane.held += 1

    def forget(self, held: Held) -> None:
        """``held`` leaves (settled or given back); its lane has room again."""
        if self._held.pop(id(held), None) is not None:
            held.lane.held -= 1
            held.lane.wake()
            self._changed.set()

    def let_go(self, held: Sequence[Held]) -> None:
        """Forget ``held`` and cancel their runners (their deliveries are given back)."""
        for one in held:
            self.forget(one)
            if one.runner is not None:
                one.runner.cancel()

    @contextlib.contextmanager
    def fetching(self) -> Iterator[None]:
        """Around a fetch and the admission (or, while a message runs alone, the giving
        back) of what it claimed: :meth:`alone` waits for it."""
        self._fetches += 1
        try:
            yield
        finally:
            self._fetches -= 1
            self._changed.set()

    def unstarted(self) -> list[Held]:
        return [h for h in self._held.values() if h.started_at is None]

    def deliveries(self) -> list[Delivery]:
        return [h.delivery for h in self._held.values()]

    def running_tasks(self) -> set[str]:
        return {h.envelope.task for h in self._held.values() if h.started_at is not None}

    async def alone(self, held: Held,
                    give_back: Callable[[list[Delivery]], Awaitable[None]]) -> None:
        """Wait until ``held`` can run alone, so that a crash is surely its own.

        A message that killed its worker before comes back with one more attempt, and so does
        everything that worker held beside it. Before the last attempt this worker gives its
        unstarted deliveries back (uncounted) through ``give_back``, lets running tasks finish
        and fetches nothing, so a death now counts against this message only.
        """
        while self._alone is not None and self._alone is not held:
            await self._wait_change()
        self._alone = held
        log.warning("message %s (task %s) was delivered %d times without finishing; running it "
                    "alone", held.envelope.id, held.envelope.task, held.delivery.attempts)
        others = [h for h in self.unstarted() if h is not held]
        self.let_go(others)
        if others:
            await give_back([h.delivery for h in others])
        # A fetch already under way (waiting on the broker) may still claim messages, the
        # very ones just given back among them: they are given back too as it returns (see
        # the worker's admission), and this one waits for that, or a death now would count
        # as one more delivery of each.
        while self._fetches or any(h is not held and h.started_at is not None
                                   for h in self._held.values()):
            await self._wait_change()

    def done_alone(self, held: Held) -> bool:
        """End ``held``'s isolation if it had one; True when fetching may resume."""
        if self._alone is not held:
            return False
        self._alone = None
        return True

    async def _wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()
