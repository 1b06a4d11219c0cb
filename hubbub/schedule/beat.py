"""``Beat``: sends periodic tasks at their slots. Run any number; exactly one leads.

Each round (a *tick*) a beat either follows or leads:

- A follower tries to take the leader lease every ``lease / 10`` seconds; it gets it once
  the leader released it (a clean stop) or stopped renewing it (it died).
- The leader renews its lease every ``lease / 3`` seconds and fires each entry's due slots.
  It acts only while its own clock says the lease is still live, and the store refuses its
  claims once another beat holds the lease.

Firing a slot is: claim it in the store (atomically, only if the entry's last claim is older
and the caller holds the lease), publish the task with the id ``slot_id(entry, slot)``, then
mark the claim published. A slot is therefore claimed at most once. A leader that dies between
claim and mark leaves the claim unpublished; the next leader publishes it again (same task
id) once it is older than a lease, so a slot is never lost to a crash.

Lateness: a slot up to ``grace`` seconds late (e.g. during a takeover) simply runs. Slots
later than that were *missed* (no beat ran) and follow the entry's policy: ``"once"`` runs
the task once, for the latest missed slot; ``"skip"`` records them as skipped and waits for
the next slot. A new entry (nothing in the store yet) starts at its first slot after a
leader first saw it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.errors import ConfigurationError, HubbubError, ScheduleError
from hubbub.message import Envelope, encode
from hubbub.schedule.entries import ScheduleEntry, slot_id
from hubbub.schedule.store import ScheduleStore, SlotState, open_store
from hubbub.task import SendOptions, TaskOptions, build_envelope

if TYPE_CHECKING:
    from hubbub.hub import Hub

log = logging.getLogger("hubbub.beat")

RETRY = (0.1, 5.0)  # backoff bounds, seconds, when the store or the broker fails
MAX_CATCH_UP = 100  # slots one entry may fire in one tick; the rest wait for the next tick
_EARLY = 0.001  # seconds added to waits so that a timer firing early still finds its slot


class Beat:
    """Sends the tasks of ``hub.schedules`` at their slots, leading or standing by.

    Use ``await Beat(hub).run()`` (or ``asyncio.create_task(...)`` next to a worker) and
    ``stop()`` to end it; the CLI runs it as ``hubbub beat -A module:hub``.

    Args:
        hub: the application whose schedule entries it fires.
        lease: seconds the leader's lease lasts without renewal. A beat that dies is
            replaced within about this long.
        grace: seconds a slot may be late and still run as itself (default: twice the
            lease). Later slots were missed and follow the entry's ``missed`` policy.
        clock: the time source (a ``FakeClock`` in tests).
        store: where the lease and the claims live (default: the hub's result store).
        owner: this beat's id in the lease (default ``host:pid:random``).

    Raises:
        ConfigurationError: the hub keeps no results (so there is no store for the
            schedule state), or a lease or grace that is not a positive number.
    """

    def __init__(
        self, hub: Hub, *, lease: float = 10.0, grace: float | None = None,
        clock: Clock = SYSTEM_CLOCK, store: ScheduleStore | None = None,
        owner: str | None = None,
    ) -> None:
        if not lease > 0:
            raise ConfigurationError(f"beat lease must be more than 0 seconds, got {lease}")
        if grace is not None and not grace >= 0:
            raise ConfigurationError(f"beat grace must not be negative, got {grace}")
        self.hub = hub
        self.lease = float(lease)
        self.grace = 2 * self.lease if grace is None else float(grace)
        self.poll = max(0.05, self.lease / 10)
        self.clock = clock
        self.store = store if store is not None else open_store(hub.settings.results, clock=clock)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.is_leader = False
        self.sent = 0  # tasks this beat published, slots and republished ones
        self._lease_until = 0.0  # monotonic: the lease is surely live before this
        self._renew_at = 0.0
        self._try_at = 0.0
        self._failures = 0
        self._connected = False
        self._next: dict[str, float] = {}  # entry -> its next slot, as this leader knows it
        self._checked: dict[str, tuple[ScheduleEntry, str | None]] = {}
        self._stop_requested = False
        self._stopping: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<Beat {self.owner} {'leading' if self.is_leader else 'following'}>"

    # -- control -------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick until :meth:`stop`; then hand the lease over and close the store.

        Store and broker failures are logged and retried with backoff; they never end it.
        """
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        log.info("beat %s starting: %d entries, lease %.1fs, grace %.1fs", self.owner,
                 len(self.hub.schedules), self.lease, self.grace)
        try:
            while not self._stopping.is_set():
                wait = await self.tick()
                await self._pause(wait)
        finally:
            await self.close()

    def stop(self) -> None:
        """Ask :meth:`run` to end (call it on the loop that runs the beat, or before)."""
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()

    async def close(self) -> None:
        """Release the lease if held, so that another beat leads at once; close the store."""
        if self.is_leader:
            self.is_leader = False
            with contextlib.suppress(HubbubError, OSError):
                await self.store.release(self.owner)
            log.info("beat %s stopped leading", self.owner)
        if self._connected:
            self._connected = False
            with contextlib.suppress(HubbubError, OSError):
                await self.store.close()

    async def _pause(self, seconds: float) -> None:
        assert self._stopping is not None
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeper, stopper):
                waiter.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)

    # -- one round -------------------------------------------------------------------------

    async def tick(self) -> float:
        """Take or renew the lease, and fire due slots when leading.

        Returns:
            Seconds until the next tick is needed.
        """
        try:
            if not self._connected:
                await self.store.connect()
                self._connected = True
            await self._lead()
            more = await self._fire_due() if self.is_leader else False
        except HubbubError as exc:
            self._failures += 1
            delay = min(RETRY[1], RETRY[0] * 2.0 ** min(self._failures - 1, 10))
            log.warning("beat %s: %s; retrying in %.1fs", self.owner, exc, delay)
            if self.is_leader and self.clock.monotonic() >= self._lease_until:
                self._lose("its lease ran out while the store failed")
            return delay
        self._failures = 0
        return 0.0 if more else self._wait()

    async def _lead(self) -> None:
        started = self.clock.monotonic()
        if self.is_leader:
            if started < self._renew_at:
                return
            if await self.store.renew(self.owner, self.lease):
                self._held_from(started)
            else:
                self._lose("another beat holds the lease")
            return
        if started < self._try_at:
            return
        self._try_at = started + self.poll
        if await self.store.acquire(self.owner, self.lease):
            self.is_leader = True
            self._next.clear()
            self._held_from(started)
            log.info("beat %s is the leader", self.owner)

    def _held_from(self, started: float) -> None:
        self._lease_until = started + self.lease
        self._renew_at = started + self.lease / 3

    def _lose(self, why: str) -> None:
        self.is_leader = False
        self._try_at = self.clock.monotonic() + self.poll
        log.warning("beat %s is no longer the leader: %s", self.owner, why)

    def _wait(self) -> float:
        mono = self.clock.monotonic()
        if not self.is_leader:
            return max(0.0, self._try_at - mono)
        wait = self._renew_at - mono
        if self._next:
            wait = min(wait, min(self._next.values()) - self.clock.time() + _EARLY)
        return max(0.0, wait)

    # -- firing ----------------------------------------------------------------------------

    def entries(self) -> Iterator[ScheduleEntry]:
        """The hub's entries that can be sent (each one checked once; failures logged)."""
        for entry in list(self.hub.schedules.values()):
            checked = self._checked.get(entry.name)
            if checked is None or checked[0] is not entry:
                problem = self._check(entry)
                if problem:
                    log.error("schedule entry %r cannot be sent, so it is not run: %s",
                              entry.name, problem)
                checked = self._checked[entry.name] = (entry, problem)
            if checked[1] is None:
                yield entry

    def _check(self, entry: ScheduleEntry) -> str | None:
        try:
            now = self.clock.time()
            entry.trigger.next_after(now)
            envelope = self.envelope(entry, entry.trigger.latest_at_or_before(now))
            encode(envelope, self.hub.codec, self.hub.settings.limits.max_message_size)
        except HubbubError as exc:
            return str(exc)
        return None

    async def _fire_due(self) -> bool:
        """Fire every entry's due slots; True if some are left for the next tick."""
        now = self.clock.time()
        states = await self.store.last_slots()
        more = False
        for entry in self.entries():
            try:
                fired = await self._fire_entry(entry, states.get(entry.name), now)
            except ScheduleError as exc:  # e.g. a cron with a year field that has run out
                log.error("schedule entry %r stops: %s", entry.name, exc)
                self._checked[entry.name] = (entry, str(exc))
                self._next.pop(entry.name, None)
                continue
            if fired is None:  # a claim was refused: the lease is probably lost
                self._renew_at = 0.0  # so the next tick, at once, renews it or follows
                return True
            more = more or fired
        return more

    async def _fire_entry(self, entry: ScheduleEntry, state: SlotState | None,
                          now: float) -> bool | None:
        """Fire ``entry``'s due slots. True: more are due; None: a claim was refused."""
        trigger, name = entry.trigger, entry.name
        if state is None:  # a new entry starts after now
            start = trigger.latest_at_or_before(now)
            if not await self.store.claim_slot(name, start, self.owner):
                return None
            await self.store.mark_published(name, start)
            self._next[name] = trigger.next_after(start)
            return False
        last = state.slot
        if not state.published:
            if state.owner != self.owner and now - state.claimed_at <= self.lease:
                self._next[name] = now + self.poll  # its claimer may be publishing right now
                return False
            log.warning("schedule %r: slot %s was claimed by %s but not recorded as sent; "
                        "sending it (again) with the same task id", name,
                        slot_id(name, last), state.owner)
            await self._send(entry, last)
        cut = now - self.grace
        missed = trigger.latest_at_or_before(cut) if trigger.next_after(last) <= cut else None
        if missed is not None:
            count = trigger.count_between(last, cut)
            if not await self.store.claim_slot(name, missed, self.owner):
                return None
            if entry.missed == "once":
                log.warning("schedule %r missed %d slot(s) up to %s; running it once for them",
                            name, count, slot_id(name, missed))
                await self._send(entry, missed)
            else:
                log.warning("schedule %r missed %d slot(s) up to %s; skipped (missed='skip')",
                            name, count, slot_id(name, missed))
                await self.store.mark_published(name, missed)
            last = missed
        slot = trigger.next_after(last)
        for _ in range(MAX_CATCH_UP):
            if slot > now:
                break
            if self.clock.monotonic() >= self._lease_until:
                self._lose("its lease ran out before the slot was claimed")
                return None
            if not await self.store.claim_slot(name, slot, self.owner):
                return None
            await self._send(entry, slot)
            slot = trigger.next_after(slot)
        self._next[name] = slot
        return slot <= now

    async def _send(self, entry: ScheduleEntry, slot: float) -> None:
        envelope = self.envelope(entry, slot)
        await self.hub.publish_async([envelope])
        await self.store.mark_published(entry.name, slot)
        self.sent += 1
        log.info("sent %s for schedule %r (%s)", entry.task, entry.name, envelope.id)

    def envelope(self, entry: ScheduleEntry, slot: float) -> Envelope:
        """The message for ``entry``'s run at ``slot``, with its deterministic task id.

        Raises:
            ConfigurationError: an option the task's defaults make invalid.
        """
        task = self.hub.tasks.get(entry.task)
        spec = task.spec if task is not None else TaskOptions(name=entry.task)
        expires = (None if entry.expires is None
                   else datetime.fromtimestamp(slot + entry.expires, UTC))
        send = SendOptions(expires=expires, priority=entry.priority, queue=entry.queue,
                           task_id=slot_id(entry.name, slot),
                           headers={"schedule_entry": entry.name, "schedule_slot": slot})
        return build_envelope(spec, self.hub.settings.default_queue, entry.args, entry.kwargs,
                              send)
