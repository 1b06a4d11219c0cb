"""``Gates``: fleet-wide rate and concurrency limits, checked right before a task takes a
pool slot, and unique keys given back when a job is settled.

Only tasks with ``rate_limit`` or ``concurrency`` (each optionally per key: ``rate_limit_key``,
``concurrency_key``; or a rate set at runtime with
``Hub.set_rate_limit``) pass through a gate; any other task never waits for the store.

- Concurrency: the task takes one of the key's N slots in the store, for a lease's length,
  renewed with the delivery leases (see :class:`~hubbub.worker.renewal.Renewal`) and given
  back when its runner ends, however it ends. A worker that dies keeps its slots only until
  they expire, as long as its leases would have lasted. No free slot: the delivery goes back
  to the broker for a short, random delay.
- Rate: the task reserves the next free start (one every ``(period + LAG_ALLOWANCE) / N``
  seconds, fleet-wide) when it is at most :data:`HORIZON` seconds away and waits for it
  here, without a pool slot; further away, the delivery goes back to the broker until a
  start could be reserved.

Giving a delivery back is a broker ``release`` with a delay: it is not an attempt and not a
retry. See docs/limits.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from hubbub._redact import redact
from hubbub.errors import ConfigurationError, HubbubError
from hubbub.limits import KeyFrom, LimitStore, Rate, Slot, derive_key, parse_rate
from hubbub.limits.unique import unique_key
from hubbub.results.base import State
from hubbub.worker.admission import refuse
from hubbub.worker.execute import exception_text

if TYPE_CHECKING:
    from hubbub.hub import Hub
    from hubbub.message import Envelope
    from hubbub.results.base import ResultBackend
    from hubbub.worker.held import Held, HeldSet
    from hubbub.worker.outcomes import Outcomes
    from hubbub.worker.renewal import Renewal
    from hubbub.worker.revocation import Revocations
    from hubbub.worker.writes import WriteBuffer

log = logging.getLogger("hubbub.worker")

HORIZON = 0.5  # seconds: the furthest a rate-limited start is reserved and waited for here
BUSY_DELAY = (0.1, 0.5)  # seconds (uniform) a task over its concurrency limit is put back for
STORE_DOWN_DELAY = 1.0  # seconds a gated task is put back for when the store cannot answer
REFRESH_RATES = 2.0  # seconds between reads of the rates set at runtime
# Seconds before a reserved start when the gate looks for a revoke (the worker's look at
# start, done early so that its round trip does not delay the start).
PRECHECK = 0.1
# Seconds ahead the soonest start is reserved: time for the store's answer and that look, so
# that a start after a quiet spell is on time instead of late and bunched with the next.
LEAD = 0.15


def check_store(hub: Hub) -> None:
    """Refuse to serve tasks with limits when the hub keeps no result store.

    Raises:
        ConfigurationError: a task has ``rate_limit`` or ``concurrency`` and there is no
            result store to keep them in.
    """
    if hub.settings.results is not None:
        return
    for task in hub.tasks.values():
        spec = task.spec
        if spec.rate_limit is not None or spec.concurrency is not None:
            option = "rate_limit" if spec.rate_limit is not None else "concurrency"
            raise ConfigurationError(
                f"task {spec.name!r} has {option}, which is kept in the result store for the "
                "whole fleet, and this hub keeps none; pass results='redis://...' or "
                "'sqlite:///results.db' to Hub()")


class Gates:
    """The limits of one worker's tasks.

    Args:
        results: the result store (the limits live there).
        writes: gives a delivery back to the broker, with a delay.
        held: the worker's held deliveries (a given-back one leaves it).
        outcomes: dead-letters a task whose limit key cannot be derived.
        lease: seconds a concurrency slot lasts without renewal (the delivery lease).
    """

    def __init__(self, results: ResultBackend, writes: WriteBuffer, held: HeldSet,
                 outcomes: Outcomes, lease: float) -> None:
        self.store: LimitStore = results.limits()
        self.writes = writes
        self.outcomes = outcomes
        self.held = held
        self.lease = lease
        self.overrides: dict[str, Rate] = {}  # rates set at runtime, by task name
        self._slots: dict[int, Slot] = {}  # id(held) -> the concurrency slot it holds
        self._background: set[asyncio.Task[None]] = set()
        # The worker's look for a revoke just before a start (Revocations.state_now).
        self.recheck: Callable[[str], Awaitable[State | None]] | None = None

    @classmethod
    def wire(cls, results: ResultBackend | None, writes: WriteBuffer, held: HeldSet,
             outcomes: Outcomes, renewal: Renewal, lease: float) -> Gates | None:
        """The gates of a worker with a result store (None without one), told of every
        settled job by ``outcomes`` and renewing their slots with ``renewal``."""
        if results is None:
            return None
        gates = cls(results, writes, held, outcomes, lease)
        outcomes.unclaim = gates.unclaim
        renewal.also.append(gates.renew)
        return gates

    @staticmethod
    def of(gates: Gates | None) -> Gates:
        """``gates``, which a worker has only while it runs with a result store.

        Raises:
            ConfigurationError: it has none.
        """
        if gates is None:
            raise ConfigurationError("rate limits are kept in the result store, and this "
                                     "worker is not running with one")
        return gates

    async def serve(self, revocations: Revocations | None) -> None:
        """What runs beside the worker: the look for revokes before a reserved start (with
        ``revocations``), and the reading of runtime rates."""
        if revocations is not None:
            self.recheck = revocations.state_now
            revocations.skipped = self.outcomes.skipped
        await self.watch_rates_forever()

    # -- before a task starts ------------------------------------------------------------

    def applies(self, held: Held) -> bool:
        """Whether ``held`` has a limit to pass (no store round trip for the others)."""
        spec = held.task.spec
        return (spec.concurrency is not None or spec.rate_limit is not None
                or held.envelope.task in self.overrides)

    def rate_of(self, held: Held) -> Rate | None:
        """The rate that holds for ``held`` now: the runtime one, else its task's option."""
        rate = self.overrides.get(held.envelope.task)
        if rate is None and held.task.spec.rate_limit is not None:
            rate = parse_rate(held.task.spec.rate_limit)
        return rate

    async def admit(self, held: Held) -> bool:
        """Wait until ``held`` may start, without a pool slot.

        Returns:
            True: it may start now (its concurrency slot is held until its runner ends).
            False: it was given back to the broker (over a limit, or the store is down), or
            refused; the caller drops it.
        """
        spec, env = held.task.spec, held.envelope
        try:
            if spec.concurrency is not None:
                key = self._key(held, spec.concurrency_key, "concurrency_key")
                if key is None:
                    return False
                self._hold_until_done(held, (key, env.id))
                if not await self.store.acquire_slot(key, env.id, limit=spec.concurrency,
                                                     ttl=self.lease):
                    self._slots.pop(id(held), None)
                    await self.give_back(held, random.uniform(*BUSY_DELAY))
                    return False
            rate = self.rate_of(held)
            if rate is not None:
                key = self._key(held, spec.rate_limit_key, "rate_limit_key")
                if key is None:
                    self._let_slot_go(held)
                    return False
                answer = await self.store.reserve(key, interval=rate.interval,
                                                  horizon=HORIZON, lead=LEAD)
                wait = answer.at - time.time()
                if not answer.granted:
                    self._let_slot_go(held)
                    await self.give_back(held, max(0.0, wait) + random.uniform(0, HORIZON / 2))
                    return False
                return await self._start_at(held, answer.at)
        except HubbubError as exc:
            log.warning("limits of task %s[%s] cannot be checked (%s); put back for %.0fs",
                        env.task, env.id, redact(str(exc)), STORE_DOWN_DELAY)
            self._let_slot_go(held)
            await self.give_back(held, STORE_DOWN_DELAY)
            return False
        return True

    def _key(self, held: Held, key_from: KeyFrom | None, option: str) -> str | None:
        """The store key of ``held``'s limit: its task's name, and the key derived from its
        arguments by ``key_from`` (the option ``option``) if it has one. None: that cannot
        be derived, and ``held`` was dead-lettered (it would fail again)."""
        env = held.envelope
        if key_from is None:
            return env.task
        try:
            return f"{env.task}:{derive_key(key_from, held.task.fn, env.args, env.kwargs, option)}"
        except Exception as exc:  # the app's key function
            self.held.forget(held)
            self.outcomes.refused(held.delivery, refuse(
                f"its {option} cannot be derived: {exception_text(exc)}", env))
            return None

    async def _start_at(self, held: Held, at: float) -> bool:
        """Wait for the reserved start ``at`` (an instant: a slow answer from the store must
        not shift it), looking for a revoke shortly before it."""
        env = held.envelope
        if self.recheck is not None:
            await asyncio.sleep(max(0.0, at - PRECHECK - time.time()))
            state = await self.recheck(env.id)
            if state is not None and held in self.held:
                log.info("task %s[%s] is %s already; skipped", env.task, env.id, state.value)
                self.held.forget(held)
                self.writes.ack([held.delivery])
                if state == State.REVOKED:  # the rest of its workflow never runs
                    self.outcomes.skipped(env)
                else:
                    self.settled(env)
                return False
        await asyncio.sleep(max(0.0, at - time.time()))
        held.admitted_at = time.monotonic()  # looked just now: the worker need not again
        return held in self.held

    async def give_back(self, held: Held, delay: float) -> None:
        """Return ``held``'s delivery to the broker, visible again after ``delay`` seconds
        (a release: not an attempt); the worker no longer holds it. The flusher writes it
        with the other releases, so the broker sees one writer."""
        if held not in self.held:
            return  # given back already (a stop)
        self.held.forget(held)
        self.writes.release_until(held.delivery, time.time() + delay)

    def _hold_until_done(self, held: Held, slot: Slot) -> None:
        """Keep ``slot`` for ``held`` until the task running ``held`` ends, however it ends."""
        self._slots[id(held)] = slot
        runner = asyncio.current_task()
        if runner is not None:
            runner.add_done_callback(lambda _: self._let_slot_go(held))

    def _let_slot_go(self, held: Held) -> None:
        slot = self._slots.pop(id(held), None)
        if slot is not None:
            self._spawn(self._release_slots([slot]))

    async def _release_slots(self, slots: list[Slot]) -> None:
        try:
            await self.store.release_slots(slots)
        except HubbubError as exc:  # it expires after the lease anyway
            log.warning("could not give back concurrency slot %s (%s); it frees itself "
                        "within %.0fs", slots[0][0], redact(str(exc)), self.lease)

    # -- after a task is settled --------------------------------------------------------

    def settled(self, envelope: Envelope) -> None:
        """``envelope``'s job reached a final state: give its unique key back, if it has
        one and the key still names this job."""
        key = unique_key(envelope)
        if key is not None:
            self.unclaim(key, envelope.id)

    def unclaim(self, key: str, owner: str) -> None:
        """Give unique ``key`` back, if it still names job ``owner`` (which is settled:
        finished, refused, dead-lettered, expired or revoked), in the background."""
        self._spawn(self._release_unique(key, owner))

    async def _release_unique(self, key: str, owner: str) -> None:
        try:
            await self.store.release_unique([(key, owner)])
        except HubbubError as exc:
            log.warning("could not give back unique key %r (%s); it expires by itself",
                        key, redact(str(exc)))

    # -- background ---------------------------------------------------------------------

    async def renew(self) -> None:
        """Extend every held concurrency slot for another lease (with the leases)."""
        slots = list(self._slots.values())
        if slots:
            await self.store.renew_slots(slots, ttl=self.lease)

    async def set_rate(self, task: str, rate: str | None) -> None:
        """Set ``task``'s rate for the fleet (None: back to its option): kept in the
        store, in force here at once and on the other workers within
        :data:`REFRESH_RATES` seconds. See docs/limits.md.

        Raises:
            ConfigurationError: ``rate`` is not a rate.
            ResultError: the store failed (ResultUnavailable: it cannot be reached).
        """
        parsed = None if rate is None else parse_rate(rate)
        await self.store.set_rate(task, None if parsed is None else parsed.text)
        overrides = dict(self.overrides)
        if parsed is None:
            overrides.pop(task, None)
        else:
            overrides[task] = parsed
        self.overrides = overrides

    async def watch_rates_forever(self) -> None:
        """Read the rates set at runtime every :data:`REFRESH_RATES` seconds (an outage of
        the store is logged once, and its end)."""
        failing = False
        while True:
            try:
                found = await self.store.rates()
                overrides = {}
                for task, text in found.items():
                    try:
                        overrides[task] = parse_rate(text)
                    except ConfigurationError:
                        log.warning("rate %r set for task %s is not a rate; ignored", text, task)
                self.overrides = overrides
                if failing:
                    log.info("the rate limits set at runtime can be read again")
                failing = False
            except HubbubError as exc:
                if not failing:
                    log.warning("could not read the rate limits set at runtime (%s); the "
                                "last ones read stay in force", redact(str(exc)))
                failing = True
            await asyncio.sleep(REFRESH_RATES)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
