"""Sources: a lane that consumes messages hubbub's broker does not hold (Celery's queues).

A :class:`Source` is a transport-like consumer that a :class:`~hubbub.worker.lane.Lane` may
carry: it fetches, leases and settles messages in another system's layout and reads each one
into an :class:`~hubbub.message.Envelope` (or says why it cannot run). The worker loop wraps
its transport and its lanes' sources in :class:`Routed`, so that the write buffer, the lease
renewer and the fetchers keep talking to one ``Transport``: a delivery goes back to whoever
handed it out, a retry to whoever serves its queue.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hubbub.transports.base import (
    DeadLetter,
    DeadLetterRequest,
    Delivery,
    Outgoing,
    QueueStats,
    Transport,
)

if TYPE_CHECKING:
    from hubbub.message import Envelope
    from hubbub.worker.admission import Refused


class Source(abc.ABC):
    """Consumes some queues of another system with leased, at-least-once delivery.

    The batch methods have the shape and the promises of :class:`Transport`'s of the same
    name; ``publish`` receives hubbub-encoded bodies (a retry of a message it handed out)
    and writes them back in its own format.
    """

    queues: tuple[str, ...]

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections.

        Raises:
            TransportUnavailable: the other broker cannot be reached.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; unacked deliveries come back after their lease."""

    @abc.abstractmethod
    def owns(self, delivery: Delivery) -> bool:
        """True when this source handed ``delivery`` out."""

    @abc.abstractmethod
    def read(self, delivery: Delivery) -> Envelope | Refused:
        """The envelope that runs ``delivery``, or why it is dead-lettered. Never raises."""

    @abc.abstractmethod
    async def fetch(self, queues: Sequence[str], *, limit: int, lease: float,
                    wait: float) -> list[Delivery]:
        """Lease up to ``limit`` due messages (as ``Transport.fetch``)."""

    @abc.abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Remove finished messages."""

    @abc.abstractmethod
    async def release(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        """Give messages back unrun, visible again after ``delay``; not an attempt."""

    @abc.abstractmethod
    @abc.abstractmethod
    async def dead_letter(self, requests: Sequence[DeadLetterRequest]) -> None:
        """Keep messages that will not run, with their reasons, and take them off the queue."""

    @abc.abstractmethod
    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        """Renew leases; returns the deliveries whose lease was already lost."""

    @abc.abstractmethod
    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Send hubbub-encoded retries back in this source's own format."""

    @abc.abstractmethod
    async def stats(self, queues: Sequence[str]) -> list[QueueStats]:
        """Counts for ``queues`` (ready, delayed, leased, dead)."""


class Routed(Transport):
    """The worker's transport plus its lanes' sources, as one ``Transport``.

    Deliveries are settled by the source that owns them, the rest by ``main``; publishing
    and stats go by queue name (a queue is served by one lane, so by one of them). Dead
    letter administration (list, requeue, delete, purge) is ``main``'s.
    """

    def __init__(self, main: Transport, sources: Sequence[Source]) -> None:
        self.main = main
        self.sources = list(sources)
        self.capabilities = main.capabilities
        self._by_queue = {q: s for s in self.sources for q in s.queues}

    def __repr__(self) -> str:
        return f"Routed({self.main!r}, {len(self.sources)} sources)"

    async def connect(self) -> None:
        await self.main.connect()
        for source in self.sources:
            await source.connect()

    async def close(self) -> None:
        try:
            for source in self.sources:
                await source.close()
        finally:
            await self.main.close()

    def _owner(self, delivery: Delivery) -> Transport | Source:
        return next((s for s in self.sources if s.owns(delivery)), self.main)

    def _split(self, deliveries: Sequence[Delivery]
               ) -> list[tuple[Transport | Source, list[Delivery]]]:
        groups: dict[int, tuple[Transport | Source, list[Delivery]]] = {}
        for d in deliveries:
            owner = self._owner(d)
            groups.setdefault(id(owner), (owner, []))[1].append(d)
        return list(groups.values())

    async def publish(self, items: Sequence[Outgoing]) -> None:
        ours = [i for i in items if i.queue not in self._by_queue]
        if ours:
            await self.main.publish(ours)
        for source in self.sources:
            theirs = [i for i in items if self._by_queue.get(i.queue) is source]
            if theirs:
                await source.publish(theirs)

    async def fetch(self, queues: Sequence[str], *, limit: int, lease: float,
                    wait: float) -> list[Delivery]:
        owners = {self._by_queue.get(q) for q in queues}
        if len(owners) != 1:
            raise ValueError(f"queues {list(queues)} mix sources; one lane, one source")
        source = owners.pop()
        if source is None:
            return await self.main.fetch(queues, limit=limit, lease=lease, wait=wait)
        return await source.fetch(queues, limit=limit, lease=lease, wait=wait)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        for owner, group in self._split(deliveries):
            await owner.ack(group)

    async def release(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        for owner, group in self._split(deliveries):
            await owner.release(group, delay=delay)

    async def dead_letter(self, requests: Sequence[DeadLetterRequest]) -> None:
        groups: dict[int, tuple[Transport | Source, list[DeadLetterRequest]]] = {}
        for r in requests:
            owner = self._owner(r.delivery)
            groups.setdefault(id(owner), (owner, []))[1].append(r)
        for owner, group in groups.values():
            await owner.dead_letter(group)

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        lost: list[Delivery] = []
        for owner, group in self._split(deliveries):
            lost += await owner.extend(group, lease=lease)
        return lost

    async def purge(self, queue: str) -> int:
        return await self.main.purge(queue)

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        if queues is None:
            return await self.main.stats(None)
        out = list(await self.main.stats([q for q in queues if q not in self._by_queue])
                   if any(q not in self._by_queue for q in queues) else [])
        for source in self.sources:
            theirs = [q for q in queues if self._by_queue.get(q) is source]
            if theirs:
                out += await source.stats(theirs)
        return out

    async def list_dead(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        return await self.main.list_dead(queue, limit=limit)

    async def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        return await self.main.requeue_dead(ids)

    async def delete_dead(self, ids: Sequence[str]) -> int:
        return await self.main.delete_dead(ids)

    async def purge_dead(self, *, older_than: float | None = None, task: str | None = None,
                         queue: str | None = None) -> int:
        return await self.main.purge_dead(older_than=older_than, task=task, queue=queue)
