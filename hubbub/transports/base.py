"""The transport seam: how bodies move between queues with leased, at-least-once delivery.

Every broker implements :class:`Transport`, and one conformance suite
(``tests/conformance``) runs unchanged against each. Transports see bytes and routing data,
never tasks. Driver errors are translated here, at the boundary, into
:class:`~hubbub.errors.TransportError` / :class:`~hubbub.errors.TransportUnavailable`.

Lease model: ``fetch`` hands out :class:`Delivery` objects leased for ``lease`` seconds.
Until it is acked, released, dead-lettered or its lease runs out, no other consumer receives
that message. ``extend`` renews leases of running work. A consumer that dies simply stops
renewing, and its deliveries come back to the queue when their leases run out.
"""

from __future__ import annotations

import abc
import contextlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

# Re-exported: the longest dead-letter reason any transport stores (characters).
from hubbub._text import MAX_REASON as MAX_REASON


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a transport can do natively; the worker adapts, it never skips a guarantee."""

    priorities: bool = True  # higher priority first (FIFO within one priority)
    delay: bool = True  # eta held in the broker
    max_priority: int = 9  # priorities are clamped to 0..max_priority
    max_message_size: int | None = None  # the broker's own cap, if any
    # True when the lease is held by the connection itself (AMQP: redelivered on channel
    # loss; consumer_timeout applies) rather than by a deadline the broker keeps.
    connection_bound_lease: bool = False


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A body to publish.

    Attributes:
        queue: target queue name.
        body: opaque bytes (an encoded envelope).
        id: the message id; transports keep it so that dead letters can be found by it.
        priority: 0..9, higher first.
        eta: epoch seconds before which the message is not delivered; None for now.
    """

    queue: str
    body: bytes
    id: str
    priority: int = 0
    eta: float | None = None


@dataclass(slots=True)
class Delivery:
    """One leased receipt of a message. Hand it back to ack/release/dead_letter/extend.

    Attributes:
        queue: the queue it came from.
        body: the bytes that were published.
        id: the message id given at publish time.
        attempts: how many times the broker has handed this message out, this one included
            (a crash that left no trace is still counted).
        priority: as published.
        receipt: transport-private handle (row id, stream entry id, delivery tag, job id).
        lease_until: epoch seconds when the lease runs out, as last set by fetch/extend.
        headers: the broker's own message headers, where it has them (AMQP), unread and
            untrusted: they let the worker name another system's message it cannot run.
    """

    queue: str
    body: bytes
    id: str
    attempts: int
    priority: int = 0
    receipt: Any = None
    lease_until: float = 0.0
    headers: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that will not be run again unless requeued, with the reason."""

    id: str
    queue: str
    body: bytes
    reason: str
    died_at: float


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts for one queue. ``leased`` is in flight on some worker."""

    queue: str
    ready: int = 0
    delayed: int = 0
    leased: int = 0
    dead: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetterRequest:
    """A delivery to move to dead letters, and why."""

    delivery: Delivery
    reason: str


class SyncPublisher(abc.ABC):
    """Publishes from plain threads, with no event loop: a producer's direct path.

    A transport offers one (:meth:`Transport.sync_publisher`) when its broker can be written
    from any thread with the same keys, rows and scripts as its ``publish``, so that
    ``task.delay()`` need not hop to an event loop. It is thread-safe, belongs to the process
    that connected its transport, and is usable from that transport's ``connect()`` until
    its ``close()``.
    """

    @abc.abstractmethod
    def publish(self, items: Sequence[Outgoing]) -> None:
        """:meth:`Transport.publish` for the calling thread: the same guarantees, the same
        errors.

        Raises:
            MessageRejectedByBroker: one item can never be stored.
            TransportUnavailable: the broker cannot be reached; nothing may be assumed sent.
        """


class Transport(abc.ABC):
    """Moves opaque bodies between queues with leased, at-least-once delivery.

    A transport instance belongs to one event loop. All methods are coroutines and take
    batches, so that a worker pays one round trip for many messages. ``async with`` connects
    it and closes it again.
    """

    # Per instance: a transport may refine it in connect() from what the server reports
    # (e.g. beanstalkd's max-job-size).
    capabilities: Capabilities = Capabilities()

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections and create what is missing (tables, groups, queues).

        Raises:
            TransportUnavailable: the broker cannot be reached.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Deliveries not acked come back after their lease."""

    async def __aenter__(self) -> Self:
        """Connect, for ``async with open_transport(url) as t:``; the block's end closes it.

        A connect that fails part way closes what it opened before the error propagates.

        Raises:
            TransportUnavailable: the broker cannot be reached.
        """
        try:
            await self.connect()
        except BaseException:
            with contextlib.suppress(Exception):  # the connect error is the one to report
                await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Store messages durably; returns once the broker has them all.

        An ``eta`` the broker cannot hold is clamped: NaN or a past one means now, and one
        beyond the broker's longest delay (or infinity) becomes that longest delay.

        Raises:
            MessageRejectedByBroker: one item can never be stored (too big for the broker,
                a queue name it cannot hold); its ``id`` says which. Items are checked before
                anything is sent, so the others can be published again without it.
            TransportUnavailable: the broker cannot be reached; nothing may be assumed sent.
        """

    def sync_publisher(self) -> SyncPublisher | None:
        """This connected transport's publisher for plain threads, or None when it has none
        (then sync code publishes through an event loop)."""
        return None

    @abc.abstractmethod
    async def fetch(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        """Lease up to ``limit`` due messages from ``queues``.

        Higher priority first, FIFO within a priority; among queues, earlier-named queues
        are not starved by later ones but need not be strictly preferred. Waits up to ``wait``
        seconds for at least one message, then returns what it has (maybe nothing).

        Never raises because of one bad entry (a missing field, an id that is not UTF-8, a
        body stored as text, a header that is not a number): such an entry is handed out
        as an ordinary Delivery whose ``body`` is the bytes found (``b""`` when missing) and
        whose ``id`` is a str made safe (undecodable bytes as ``\\x..`` escapes, or the
        broker's own entry id), so that the worker dead-letters it like any undecodable body
        and ``ack``/``dead_letter`` work on its receipt. An entry that cannot even become a
        Delivery is moved to the dead letters here, with the reason, and logged. Unreadable
        counts default safely (attempts from a redelivered flag, priority 0).

        Raises:
            TransportUnavailable: the broker cannot be reached.
            TransportError: the broker failed the whole fetch.
        """

    @abc.abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Remove finished messages. Acking a delivery whose lease was lost is a no-op."""

    @abc.abstractmethod
    async def release(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        """Give messages back unrun (e.g. on shutdown), visible again after ``delay``.

        A released delivery does not count as an attempt.
        """

    @abc.abstractmethod
    async def dead_letter(self, requests: Sequence[DeadLetterRequest]) -> None:
        """Move messages to the dead-letter store with their reasons.

        Dead letters are kept for a retention (``dead_ttl`` seconds, default 7 days) and at
        most ``dead_max`` per queue (default 10,000): past the cap the oldest are dropped,
        with a log line saying how many. See ``hubbub.transports._dead``.

        A reason is stored made encodable and cut to ``MAX_REASON`` (4096) characters,
        ending with a note of how much was cut; brokers with smaller header limits (AMQP)
        cut the copy in a header shorter still.
        """

    @abc.abstractmethod
    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        """Renew leases for another ``lease`` seconds.

        Returns:
            The deliveries whose lease was already lost (another consumer may have them).
        """

    @abc.abstractmethod
    async def purge(self, queue: str) -> int:
        """Delete every ready and delayed message of ``queue``; returns how many."""

    @abc.abstractmethod
    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts per queue; ``None`` means every queue the broker knows of."""

    @abc.abstractmethod
    async def list_dead(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters, of one queue or all; none past the retention.

        Args:
            queue: only this queue's dead letters; ``None`` for every queue.
            limit: at most this many.

        Returns:
            Oldest first.

        Raises:
            TransportUnavailable: the broker cannot be reached.
        """

    async def dead_letters(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """Deprecated name of :meth:`list_dead` (it read too much like ``dead_letter``).

        Raises:
            TransportUnavailable: the broker cannot be reached.
        """
        warnings.warn("Transport.dead_letters is now list_dead; the old name goes in 0.3",
                      DeprecationWarning, stacklevel=2)
        return await self.list_dead(queue, limit=limit)

    @abc.abstractmethod
    async def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        """Publish dead letters again (all when ``ids`` is None); returns how many."""

    @abc.abstractmethod
    async def delete_dead(self, ids: Sequence[str]) -> int:
        """Delete the dead letters with these message ids, in any queue.

        Args:
            ids: message ids; an id that names no dead letter is ignored.

        Returns:
            How many dead letters were deleted.

        Raises:
            TransportUnavailable: the broker cannot be reached.
        """

    @abc.abstractmethod
    async def purge_dead(self, *, older_than: float | None = None, task: str | None = None,
                         queue: str | None = None) -> int:
        """Delete the dead letters that match every condition given (all when none is).

        Args:
            older_than: only those that died at least this many seconds ago.
            task: only those whose body names this task (read unverified; a body that is
                not a readable hubbub message never matches).
            queue: only this queue's.

        Returns:
            How many dead letters were deleted.

        Raises:
            ConfigurationError: ``older_than`` is negative or not a number.
            TransportUnavailable: the broker cannot be reached.
        """
