"""``WriteBuffer``: the worker's broker and store writes, batched and written by one flusher.

Order keeps at-least-once delivery: a retry is published before the original is acked, and
a result is stored before its message is acked. A batch that fails for a reason that may
pass (the broker or the store is down) is kept and retried with backoff; the deliveries it
holds stay leased (the renewer asks for them). A write that can never succeed for one item
(a result that cannot be encoded, a retry the broker refuses) settles that item alone, so
one bad item never blocks everyone else's acks.

Fewer, bigger writes: a STARTED record waits ``STARTED_WAIT`` in the buffer, where a short
task's SUCCESS replaces it (a longer task's is written then); a flush lets the loop turn
``GATHER`` times for the outcomes already on their way; and a store that shares the
broker's database (SQLite on one file) writes a flush's records and acks in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hubbub._redact import redact
from hubbub._text import cap
from hubbub.errors import ErrorKind, HubbubError, MessageError, MessageRejectedByBroker
from hubbub.results.base import ErrorInfo, ResultBackend, ResultRecord, State
from hubbub.transports.base import DeadLetterRequest, Delivery, Outgoing, Transport
from hubbub.worker.execute import clean_text, exception_text
from hubbub.worker.followups import FollowUp, write_followups

log = logging.getLogger("hubbub.worker")
T = TypeVar("T")

RETRY_IO = (0.1, 5.0)  # backoff bounds, seconds, when the broker or store fails
# A STARTED record waits this many seconds in the buffer before it is written (unless the
# worker is closing): a short task's SUCCESS replaces it there, so its worker makes one
# store write, not two, and a STARTED alone never starts a flush of its own sooner.
STARTED_WAIT = 0.005
# A flush lets the event loop turn this many times after the write that wanted it (unless
# the worker is closing, or GATHER_MAX deliveries are settled): the outcomes already waiting
# to be read (a prefork child's batch of results) go with it, in one store write and one
# ack, not a flush each. Turns, not a timer: waiting a millisecond stalled the worker, whose
# fetching pauses while finished tasks wait for their acks (measured: 8-20% fewer tasks/s).
GATHER = 3
GATHER_MAX = 64


@dataclass(slots=True)
class RetryWrite:
    """A retry to publish, then the delivery it replaces to ack.

    If the broker refuses the retry for good, the task has failed for good: ``failure``
    (when results are kept) replaces the RETRY record, and ``delivery`` is acked, or
    dead-lettered with the reason when ``dead_letter``.
    """

    outgoing: Outgoing
    delivery: Delivery
    failure: Callable[[str], ResultRecord | None]
    dead_letter: bool = True


@dataclass
class _Batch:
    retries: list[RetryWrite] = field(default_factory=list)
    records: dict[str, ResultRecord] = field(default_factory=dict)
    ack: list[Delivery] = field(default_factory=list)
    dead: list[DeadLetterRequest] = field(default_factory=list)
    release: list[Delivery] = field(default_factory=list)
    # -- limits: deliveries given back until an instant (epoch seconds), not attempts --
    later: list[tuple[Delivery, float]] = field(default_factory=list)
    followups: list[FollowUp] = field(default_factory=list)  # -- canvas: written first
    # -- canvas: the follow-ups already being written while the batch before this one
    # flushes (WriteBuffer.follow_up), and that write; the flush of this batch awaits it first
    early: asyncio.Task[list[ResultRecord]] | None = None
    early_items: list[FollowUp] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.retries or self.records or self.ack or self.dead or self.release
                    or self.later or self.followups)

    def absorb(self, newer: _Batch) -> _Batch:
        """This failed batch with ``newer`` writes after it (newer records win)."""
        newer.records = {**self.records, **newer.records}
        newer.retries = self.retries + newer.retries
        newer.ack = self.ack + newer.ack
        newer.dead = self.dead + newer.dead
        newer.release = self.release + newer.release
        newer.later = self.later + newer.later  # -- limits --
        newer.followups = self.followups + newer.followups
        return newer

    def settling(self) -> list[Delivery]:
        """Deliveries finished but not yet acked or dead-lettered."""
        return [*self.ack, *(r.delivery for r in self.dead), *(r.delivery for r in self.retries)]


class WriteBuffer:
    """Writes queued by the worker loop, flushed in batches by :meth:`flush_forever`.

    Args:
        transport: the broker.
        results: the result store, or None when results are not kept.
        result_ttl: seconds results are kept.
    """

    def __init__(self, transport: Transport, results: ResultBackend | None,
                 result_ttl: float | None) -> None:
        self.transport = transport
        self.results = results
        self.result_ttl = result_ttl
        self.closing = False
        self.flushed = asyncio.Event()  # set after each flush that went through
        self._pending = _Batch()
        self._flushing: _Batch | None = None
        self._wanted = asyncio.Event()
        # -- see STARTED_WAIT: the pending STARTED records' ids, each with the loop time it
        # was first queued at, and the timer that flushes the oldest when it is due
        self._started: dict[str, float] = {}
        self._started_due: asyncio.TimerHandle | None = None

    # -- queueing ----------------------------------------------------------------------------

    def record(self, record: ResultRecord) -> None:
        self._pending.records[record.id] = record
        if record.state != State.STARTED:
            self._started.pop(record.id, None)
            self._wanted.set()
            return
        loop = asyncio.get_running_loop()
        self._started.setdefault(record.id, loop.time())
        if not self._wanted.is_set() and self._started_due is None:
            self._started_due = loop.call_later(STARTED_WAIT, self._started_wanted)

    def _started_wanted(self) -> None:
        self._started_due = None
        self._wanted.set()

    def _take(self) -> _Batch:
        """The pending writes to flush now, but STARTED records queued less than
        STARTED_WAIT ago, which stay pending (the timer flushes them when due)."""
        batch, self._pending = self._pending, _Batch()
        if self._started_due is not None:
            self._started_due.cancel()
            self._started_due = None
        if not self._started or self.closing:
            self._started = {}
            return batch
        loop = asyncio.get_running_loop()
        due = loop.time() - STARTED_WAIT + 0.001  # a record this close to due goes now
        young = {id: at for id, at in self._started.items() if at > due
                 and (record := batch.records.get(id)) is not None
                 and record.state == State.STARTED}
        self._started = young
        for id in young:
            self._pending.records[id] = batch.records.pop(id)
        if young:
            self._started_due = loop.call_at(min(young.values()) + STARTED_WAIT,
                                             self._started_wanted)
        return batch

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._pending.ack.extend(deliveries)
        self._wanted.set()

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._pending.dead.append(DeadLetterRequest(delivery, cap(reason)))
        self._wanted.set()

    def retry(self, write: RetryWrite) -> None:
        self._pending.retries.append(write)
        self._wanted.set()

    def release(self, deliveries: Sequence[Delivery]) -> None:
        self._pending.release.extend(deliveries)
        self._wanted.set()

    def wake(self) -> None:
        self._wanted.set()

    # -- limits --
    def release_until(self, delivery: Delivery, at: float) -> None:
        """Give ``delivery`` back unrun, visible again at ``at`` (epoch seconds); a limit
        made it wait (hubbub.worker.gates). Written with the releases."""
        self._pending.later.append((delivery, at))
        self._wanted.set()

    def follow_up(self, item: FollowUp) -> None:
        """-- canvas: publish what follows a finished task before its record and ack.

        While a flush is under way, the follow-ups waiting for the next one start at once
        (the next step of a chain need not wait for earlier records and acks): the next
        flush awaits that write before it writes any record or ack of its own, so the rule
        holds. One such write at a time; what comes meanwhile goes with the next flush.
        """
        pending = self._pending
        pending.followups.append(item)
        self._wanted.set()
        if self._flushing is not None and pending.early is None:
            pending.early_items = list(pending.followups)
            pending.early = asyncio.ensure_future(write_followups(
                pending.early_items, self.transport, self.results, self.result_ttl))
            pending.early.add_done_callback(_retrieved)

    def unsettled(self) -> int:
        """Finished deliveries not yet acked: the worker fetches less while this is high."""
        return sum(len(b.settling()) for b in (self._pending, self._flushing) if b is not None)

    async def settled(self) -> None:
        """Return once every finished delivery queued so far is acked, released or
        dead-lettered (a failing store is retried by the flusher meanwhile)."""
        # Releases too: a message run alone gives back what it held with it, and if it then
        # kills the worker, a release not yet written leaves those deliveries counted as
        # attempts (one more death makes a bystander look like a poison message).
        while self.unsettled() or any(b.release or b.later for b in (
                self._pending, self._flushing) if b is not None):
            self._wanted.set()
            self.flushed.clear()  # the next flush that goes through, or a second, then look
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flushed.wait(), 1.0)

    def settling(self) -> list[Delivery]:
        """Finished deliveries whose ack waits for a flush: their leases must be renewed."""
        return [d for b in (self._pending, self._flushing) if b is not None
                for d in b.settling()]

    def __bool__(self) -> bool:
        return bool(self._pending)

    # -- flushing ----------------------------------------------------------------------------

    async def flush_forever(self) -> None:
        """Flush whenever there are writes, until closing and empty (or giving up)."""
        delay = RETRY_IO[0]
        while True:
            await self._wanted.wait()
            await self._gather()
            self._wanted.clear()
            batch = self._take()
            self._flushing = batch
            try:
                await self._flush(batch)
                delay = RETRY_IO[0]
                self.flushed.set()
            except HubbubError as exc:
                log.warning("a batched write failed (writing %s: %s); retrying in %.1fs",
                            _what(batch), redact(str(exc)), delay)
                self._pending = batch.absorb(self._pending)
                if self.closing and delay >= RETRY_IO[1]:
                    log.error("giving up on %d pending writes at shutdown; their messages "
                              "come back after the lease", len(batch.settling()))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_IO[1])
                self._wanted.set()
                continue
            finally:
                self._flushing = None
            if self.closing and not self._pending:
                return

    async def _gather(self) -> None:
        """Let the loop turn up to GATHER times while fewer than GATHER_MAX deliveries are
        settled and the worker is not closing (see GATHER)."""
        for _ in range(GATHER):
            if self.closing or len(self._pending.ack) >= GATHER_MAX:
                return
            await asyncio.sleep(0)

    async def _flush(self, batch: _Batch) -> None:
        # Each step empties its part of the batch once it went through, so that a retry of a
        # failed batch repeats only what was not yet written.
        if batch.early is not None:  # -- canvas: follow-ups that started during the last flush
            await self._early_written(batch)
        if batch.followups:  # -- canvas: next steps, callbacks, chord joins; before acks
            for unsent in await write_followups(batch.followups, self.transport,
                                                self.results, self.result_ttl):
                batch.records.setdefault(unsent.id, unsent)
            batch.followups = []
        if batch.retries:
            refused = {id(outgoing): reason for outgoing, reason in await _one_by_one(
                self.transport.publish, [w.outgoing for w in batch.retries])}
            for write in batch.retries:
                reason = refused.get(id(write.outgoing))
                if reason is None:
                    batch.ack.append(write.delivery)
                    continue
                log.error("retry of message %r could not be sent (%s); the task failed",
                          write.delivery.id, reason)
                if write.dead_letter:
                    batch.dead.append(DeadLetterRequest(write.delivery, cap(
                        f"its retry could not be sent: {reason}")))
                else:
                    batch.ack.append(write.delivery)
                record = write.failure(reason)
                if record is not None:
                    batch.records[record.id] = record
            batch.retries = []
        if batch.records and self.results is not None:
            records = list(batch.records.values())
            if batch.ack and await self._store_and_ack(records, batch.ack):
                batch.ack = []
            else:
                await self._store(records)
        batch.records = {}
        for what, send, items in (("release", self.transport.release, batch.release),
                                  ("ack", self.transport.ack, batch.ack)):
            for delivery, reason in await _one_by_one(send, items):
                log.error("%s of message %r failed for good (%s); it comes back after its "
                          "lease", what, delivery.id, reason)
        batch.release, batch.ack = [], []
        if batch.later:  # -- limits: one release per delay, to a tenth of a second --
            now, by_delay = time.time(), dict[float, list[Delivery]]()
            for delivery, at in batch.later:
                by_delay.setdefault(round(max(0.0, at - now), 1), []).append(delivery)
            for delay, deliveries in sorted(by_delay.items()):
                release = functools.partial(self.transport.release, delay=delay)
                for delivery, reason in await _one_by_one(release, deliveries):
                    log.error("release of message %r failed for good (%s); it comes back "
                              "after its lease", delivery.id, reason)
                done = {id(d) for d in deliveries}
                batch.later = [(d, at) for d, at in batch.later if id(d) not in done]
        if batch.dead:
            bare = [DeadLetterRequest(request.delivery, "(the reason could not be stored)")
                    for request, _ in await _one_by_one(self.transport.dead_letter, batch.dead)]
            for request, reason in await _one_by_one(self.transport.dead_letter, bare):
                log.error("message %r cannot be dead-lettered (%s); it comes back after its "
                          "lease", request.delivery.id, reason)
            batch.dead = []

    async def _early_written(self, batch: _Batch) -> None:
        """-- canvas: wait for the follow-ups written early (:meth:`follow_up`); they leave
        the batch once written. If that write failed, they stay in it and go with the rest
        (writing follow-ups again is safe: joins count distinct ids, ids are kept)."""
        early, batch.early = batch.early, None
        assert early is not None
        try:
            unsent = await early
        except HubbubError:
            batch.early_items = []
            return
        for record in unsent:
            batch.records.setdefault(record.id, record)
        done = {id(item) for item in batch.early_items}
        batch.followups = [f for f in batch.followups if id(f) not in done]
        batch.early_items = []

    async def _store_and_ack(self, records: list[ResultRecord], acks: list[Delivery]) -> bool:
        """Store ``records`` and ack ``acks`` in one write, where the store can do so with
        this broker (``store_and_ack``: the SQLite store on the broker's file); False when
        nothing was written, and the records and acks go their own ways (one by one if one
        of them can never be written).

        Raises:
            HubbubError: a failure that may pass; neither was written.
        """
        joint = getattr(type(self.results), "store_and_ack", None)  # a proxy's: not that
        if joint is None:
            return False
        try:
            return bool(await joint(self.results, records, ttl=self.result_ttl,
                                    transport=self.transport, deliveries=acks))
        except Exception as exc:
            if not _permanent(exc):
                raise
            return False

    async def _store(self, records: list[ResultRecord]) -> None:
        assert self.results is not None
        substitutes = []
        for record, reason in await _one_by_one(self._store_batch, records):
            log.error("result of task %r cannot be stored (%s); storing a FAILURE "
                      "instead", record.id, reason)
            error = ErrorInfo(ErrorKind.NOT_STORABLE, cap(
                f"its {record.state.value} record cannot be stored: {reason}"))
            substitutes.append(ResultRecord(
                clean_text(record.id), State.FAILURE, clean_text(record.task or "") or None,
                None, error, record.retries, record.worker, record.created_at,
                record.started_at, time.time()))
        for record, reason in await _one_by_one(self._store_batch, substitutes):
            log.error("no record can be stored for task %r (%s); it stays without a result",
                      record.id, reason)

    async def _store_batch(self, records: Sequence[ResultRecord]) -> None:
        assert self.results is not None
        await self.results.store(records, ttl=self.result_ttl)


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark an early follow-up write's failure as seen: the flush that awaits it handles
    it, and a flusher that gave up at shutdown must not leave an unretrieved error."""
    if not task.cancelled():
        task.exception()


async def _one_by_one(write: Callable[[Sequence[T]], Awaitable[Any]],
                      items: Sequence[T]) -> list[tuple[T, str]]:
    """``write(items)``; if it fails for good, each item alone.

    Returns:
        The items that cannot be written, ever, each with the reason.

    Raises:
        HubbubError: a failure that may pass (the broker or the store is down): the caller
            keeps the batch and retries it later.
    """
    if not items:
        return []
    try:
        await write(items)
        return []
    except Exception as exc:
        if not _permanent(exc):
            raise
        if len(items) == 1:
            return [(items[0], _text(exc))]
    refused: list[tuple[T, str]] = []
    for item in items:
        try:
            await write([item])
        except Exception as exc:
            if not _permanent(exc):
                raise
            refused.append((item, _text(exc)))
    return refused


def _permanent(exc: Exception) -> bool:
    """True when writing the same item again cannot succeed: the broker refuses it, or it
    breaks the code that writes it (it cannot be encoded); a ``HubbubError`` otherwise says
    the broker or the store is down or busy, which passes."""
    return isinstance(exc, MessageRejectedByBroker | MessageError) or not isinstance(
        exc, HubbubError)


def _what(batch: _Batch) -> str:
    parts = [name for name, items in (("retries", batch.retries), ("results", batch.records),
                                      ("releases", batch.release), ("acks", batch.ack),
                                      ("dead letters", batch.dead)) if items]
    return ", ".join(parts) or "nothing"


def _text(exc: BaseException) -> str:
    """A one-line description of ``exc`` that never raises and always encodes."""
    return cap(exception_text(exc))
