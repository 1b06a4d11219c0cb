"""``WorkerLoop``: the worker's one event loop, the only place that talks to the broker.

It fetches in batches no larger than its free slots plus a small prefetch, validates what
it receives, hands jobs to its pool, and settles outcomes: results, retries, acks and dead
letters are buffered and written in batches by one flusher, in an order that keeps
at-least-once delivery (publish retries, then store results, then ack). Leases of every
held delivery are renewed while it is held, so a long task is never handed to another
worker. Shutdown releases unstarted deliveries at once and waits for running ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hubbub._redact import redact
from hubbub.codecs import BY_CONTENT_TYPE
from hubbub.errors import ConfigurationError, HubbubError, MessageError, TransportError
from hubbub.events import (
    TaskDeadLettered,
    TaskFailed,
    TaskSucceeded,
    WorkerHeartbeat,
    WorkerOffline,
    WorkerOnline,
)
from hubbub.job import Crashed, Failed, Job, Outcome, Rejected, Succeeded, TimedOut
from hubbub.message import Envelope, decode, encode, peek_id
from hubbub.middleware import DispatchContext, DispatchNext, chain_dispatch
from hubbub.results.base import ErrorInfo, ResultBackend, ResultRecord, State
from hubbub.transports.base import DeadLetterRequest, Delivery, Outgoing, Transport
from hubbub.worker.lane import Lane
from hubbub.worker.pools.coroutines import AsyncPool

if TYPE_CHECKING:
    from hubbub.hub import Hub
    from hubbub.task import Task
    from hubbub.worker.pools.base import Pool

log = logging.getLogger("hubbub.worker")

FETCH_WAIT = 0.5  # seconds one fetch may wait; bounds how long a stop waits for the fetcher
RETRY_IO = (0.1, 5.0)  # backoff bounds, seconds, when the broker or store fails


def backoff(base: float, ceiling: float, retries: int, jitter: bool) -> float:
    """Seconds before retry number ``retries + 1``: exponential, capped, optionally jittered."""
    delay = min(ceiling, base * (2 ** min(retries, 63)))
    return random.uniform(delay / 2, delay) if jitter else delay


@dataclass(eq=False)
class _Held:
    """A delivery this worker holds, and what became of it."""

    delivery: Delivery
    envelope: Envelope
    task: Task[Any, Any]
    lane: Lane
    started_at: float | None = None
    runner: asyncio.Task[None] | None = None


@dataclass
class _Writes:
    """Broker and store writes waiting for the flusher."""

    publish: list[Outgoing] = field(default_factory=list)
    records: dict[str, ResultRecord] = field(default_factory=dict)
    ack: list[Delivery] = field(default_factory=list)
    dead: list[DeadLetterRequest] = field(default_factory=list)
    release: list[Delivery] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.publish or self.records or self.ack or self.dead or self.release)


class WorkerLoop:
    """Consumes ``queues`` and runs their tasks on ``pool``.

    Args:
        hub: the application whose tasks it runs.
        queues: queue names to consume (default: the hub's default queue).
        pool: where tasks run (default: ``AsyncPool()``).
        prefetch: deliveries held beyond the free slots (default: min(concurrency, 16)).
        grace: seconds a graceful stop waits for running tasks.
        name: this worker's name in logs and events (default host:pid).
        heartbeat: seconds between heartbeat events.
        stop_when_idle: stop once the queues have nothing ready, delayed or leased (tests,
            batch jobs).
        lease: seconds a delivery stays leased without renewal (default: the hub's).
        lanes: several (queues, pool) pairs served by this one worker, instead of
            ``queues``/``pool``/``prefetch``.

    Raises:
        ConfigurationError: lanes given together with queues or pool, or a queue in two lanes.
    """

    def __init__(
        self, hub: Hub, *, queues: Sequence[str] | None = None, pool: Pool | None = None,
        prefetch: int | None = None, grace: float = 30.0, name: str | None = None,
        heartbeat: float = 10.0, stop_when_idle: bool = False, lease: float | None = None,
        lanes: Sequence[Lane] | None = None,
    ) -> None:
        self.hub = hub
        if lanes and (queues or pool):
            raise ConfigurationError("give lanes, or queues and a pool, not both")
        self.lanes = list(lanes or [Lane(list(queues or [hub.settings.default_queue]),
                                         pool or AsyncPool(), prefetch)])
        self.queues = [q for lane in self.lanes for q in lane.queues]
        if len(set(self.queues)) != len(self.queues):
            raise ConfigurationError(f"a queue is served by two lanes: {self.queues}")
        self.pool = self.lanes[0].pool
        self.grace = grace
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.heartbeat = heartbeat
        self.stop_when_idle = stop_when_idle
        self.lease = lease if lease is not None else hub.settings.lease
        self.processed = 0
        self.abandoned = 0  # tasks left running when the loop ended (after abort or grace)
        self._held: dict[int, _Held] = {}
        self._writes = _Writes()
        self._stopping: asyncio.Event | None = None
        self._aborting: asyncio.Event | None = None
        self._flush_wanted: asyncio.Event | None = None
        self._signatures: dict[str, inspect.Signature | None] = {}
        self._dispatchers: dict[int, DispatchNext] = {}
        self._started_lately: set[str] = set()  # task names started since the last renewal
        self._alone: _Held | None = None  # a last-chance delivery running by itself
        self._transport: Transport | None = None
        self._floor = asyncio.Event()  # set whenever a held delivery leaves
        self._flushed = asyncio.Event()  # set after each flush that went through

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Graceful stop: fetch no more, release unstarted work, let running tasks finish."""
        if self._stopping is not None:
            self._stopping.set()

    def abort(self) -> None:
        """Second stop: release running work too and exit without waiting for it."""
        if self._stopping is not None and self._aborting is not None:
            self._stopping.set()
            self._aborting.set()

    @property
    def running(self) -> int:
        return sum(lane.running for lane in self.lanes)

    # -- main ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until ``stop()``/``abort()`` (or idle, with ``stop_when_idle``).

        Raises:
            TransportUnavailable: the broker cannot be reached at start.
            ConfigurationError: a pool cannot start (e.g. the app cannot be imported).
        """
        self._stopping, self._aborting = asyncio.Event(), asyncio.Event()
        self._flush_wanted = asyncio.Event()
        transport = self.hub.open_transport()
        results = self.hub.open_results()
        started: list[Pool] = []
        await transport.connect()
        self._transport = transport
        try:
            self._max_size = self.hub.max_message_size(transport)
            if results is not None:
                await results.connect()
            for lane in self.lanes:
                await lane.pool.start(self.hub)
                started.append(lane.pool)
                self._dispatchers[id(lane)] = chain_dispatch(self.hub.middleware,
                                                             _runner(lane.pool))
            await self._serve(transport, results)
        finally:
            for pool in started:
                await pool.stop()
            await transport.close()
            if results is not None:
                await results.close()

    async def _serve(self, transport: Transport, results: ResultBackend | None) -> None:
        assert self._flush_wanted is not None
        self.hub.events.emit(WorkerOnline(self.name, tuple(self.queues), self.pool.kind,
                                          sum(lane.pool.concurrency for lane in self.lanes)))
        log.info("worker %s online: broker %s, %s", self.name, redact(self.hub.settings.broker),
                 "; ".join(f"queues {','.join(lane.queues)} on pool {lane.pool.kind} "
                           f"x{lane.pool.concurrency}" for lane in self.lanes))
        flusher = asyncio.create_task(self._flush_forever(transport, results))
        helpers = [asyncio.create_task(self._renew_forever(transport)),
                   asyncio.create_task(self._heartbeat_forever())]
        try:
            await asyncio.gather(*(self._fetch_forever(transport, results, lane)
                                   for lane in self.lanes))
            await self._wind_down()
        finally:
            for helper in helpers:
                helper.cancel()
            self._flush_wanted.set()
            self._closing = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(flusher, timeout=30)
            self.hub.events.emit(WorkerOffline(self.name, self.processed))
            log.info("worker %s offline after %d tasks", self.name, self.processed)

    async def _fetch_forever(self, transport: Transport, results: ResultBackend | None,
                             lane: Lane) -> None:
        assert self._stopping is not None
        delay = RETRY_IO[0]
        while not self._stopping.is_set():
            await lane.autoscale_step()
            room = lane.budget if self._alone is None else 0
            if self._unsettled() >= self._capacity():
                # Finished work is not acked yet (a slow flush, or the broker or the result
                # store is down): fetch nothing more until a flush goes through, or the
                # backlog would grow without bound.
                self._flushed.clear()
                await _first(self._flushed.wait(), self._stopping.wait(), asyncio.sleep(1.0))
                continue
            if room <= 0:
                lane.room.clear()
                await _first(lane.room.wait(), self._stopping.wait(),
                             asyncio.sleep(1.0 if lane.autoscale else 3600))
                continue
            try:
                deliveries = await transport.fetch(lane.queues, limit=room, lease=self.lease,
                                                   wait=FETCH_WAIT)
                delay = RETRY_IO[0]
                if not deliveries and self.stop_when_idle and await self._idle(transport):
                    self._stopping.set()
            except TransportError as exc:
                log.warning("fetch failed (%s); retrying in %.1fs", redact(str(exc)), delay)
                await _first(asyncio.sleep(delay), self._stopping.wait())
                delay = min(delay * 2, RETRY_IO[1])
                continue
            if deliveries:
                await self._admit(deliveries, results, lane)

    def _unsettled(self) -> int:
        return sum(len(w.ack) + len(w.dead) for w in (self._writes, self._flushing)
                   if w is not None)

    def _capacity(self) -> int:
        return sum(lane.pool.concurrency + (lane.prefetch or 0) for lane in self.lanes)

    async def _idle(self, transport: Transport) -> bool:
        if self._held or self._writes:
            return False
        stats = await transport.stats(self.queues)
        return all(s.ready == 0 and s.delayed == 0 and s.leased == 0 for s in stats)

    async def _wind_down(self) -> None:
        assert self._aborting is not None
        unstarted = [h for h in self._held.values() if h.started_at is None]
        for held in unstarted:
            self._forget(held)
            if held.runner is not None:
                held.runner.cancel()
        self._queue_release([h.delivery for h in unstarted])
        if unstarted:
            log.info("released %d unstarted deliveries", len(unstarted))
        running = [h.runner for h in self._held.values() if h.runner is not None]
        if running:
            log.info("waiting up to %.0fs for %d running tasks", self.grace, len(running))
            waiter = asyncio.gather(*running, return_exceptions=True)
            await _first(asyncio.wait_for(asyncio.shield(waiter), self.grace),
                         self._aborting.wait())
        leftover = list(self._held.values())
        if leftover:
            log.warning("releasing %d running tasks unfinished; they will run again",
                        len(leftover))
            self.abandoned = len(leftover)
            for held in leftover:
                self._forget(held)
                if held.runner is not None:
                    held.runner.cancel()
            self._queue_release([h.delivery for h in leftover])

    # -- admission ---------------------------------------------------------------------------

    async def _admit(self, deliveries: list[Delivery], results: ResultBackend | None,
                     lane: Lane) -> None:
        accepted: list[_Held] = []
        for delivery in deliveries:
            held = self._validate(delivery, lane)
            if held is not None:
                accepted.append(held)
        revoked: set[str] = set()
        if results is not None and accepted:
            try:
                found = await results.get([h.envelope.id for h in accepted])
                revoked = {i for i, r in found.items() if r.state == State.REVOKED}
            except HubbubError as exc:
                log.warning("could not read revocations (%s); running anyway", exc)
        now = time.time()
        for held in accepted:
            env = held.envelope
            if env.id in revoked:
                log.info("task %s[%s] revoked; skipped", env.task, env.id)
                self._queue(ack=[held.delivery])
            elif env.expires is not None and env.expires <= now:
                log.info("task %s[%s] expired; skipped", env.task, env.id)
                at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(env.expires))
                self._record(held, State.REVOKED,
                             error=ErrorInfo("TaskRevoked", f"expired before it ran ({at} UTC)"))
                self._queue(ack=[held.delivery])
            else:
                self._held[id(held)] = held
                lane.held += 1
                held.runner = asyncio.create_task(self._execute(held))

    def _validate(self, delivery: Delivery, lane: Lane) -> _Held | None:
        """The held delivery, or None after dead-lettering what cannot run."""
        limits = self.hub.settings.limits
        try:
            envelope = decode(delivery.body, self.hub.settings.accept, limits.max_message_size,
                              self.hub.signer)
        except MessageError as exc:
            self._reject(delivery, str(exc), task_id=peek_id(delivery.body))
            return None
        task = self.hub.tasks.get(envelope.task)
        if task is None:
            self._reject(delivery, f"unknown task {envelope.task!r}: not registered on this "
                         "worker (is its module imported by the -A app?)", envelope)
            return None
        if delivery.attempts > limits.max_deliveries:
            self._reject(delivery, f"delivered {delivery.attempts} times without finishing; "
                         "its worker died each time (poison message)", envelope)
            return None
        problem = self._bad_arguments(task, envelope)
        if problem:
            self._reject(delivery, f"bad arguments for task {envelope.task!r}: {problem}",
                         envelope)
            return None
        return _Held(delivery, envelope, task, lane)

    def _bad_arguments(self, task: Task[Any, Any], envelope: Envelope) -> str | None:
        if task.name not in self._signatures:
            try:
                self._signatures[task.name] = inspect.signature(task.fn)
            except (TypeError, ValueError):
                self._signatures[task.name] = None
        signature = self._signatures[task.name]
        if signature is None:
            return None
        try:
            signature.bind(*envelope.args, **envelope.kwargs)
        except TypeError as exc:
            return str(exc)
        return None

    def _reject(self, delivery: Delivery, reason: str, envelope: Envelope | None = None,
                task_id: str | None = None) -> None:
        task_id = envelope.id if envelope else task_id
        log.error("dead-lettered message %s from queue %s: %s", task_id or "?", delivery.queue,
                  reason)
        self._queue(dead=[DeadLetterRequest(delivery, reason)])
        if task_id is not None:
            record = ResultRecord(task_id, State.FAILURE,
                                  task=envelope.task if envelope else None,
                                  error=ErrorInfo("MessageError", reason), worker=self.name,
                                  finished_at=time.time())
            self._writes.records[task_id] = record
        self.hub.events.emit(TaskDeadLettered(task_id, delivery.queue, reason, self.name))

    # -- running -----------------------------------------------------------------------------

    async def _execute(self, held: _Held) -> None:
        assert self._stopping is not None
        lane = held.lane
        await lane.acquire()
        try:
            if self._stopping.is_set():
                return  # _wind_down releases it
            attempts = held.delivery.attempts
            if attempts > 1 and attempts >= self.hub.settings.limits.max_deliveries:
                await self._clear_the_floor(held)
            held.started_at = time.time()
            self._started_lately.add(held.envelope.task)
            self._record(held, State.STARTED)
            env = held.envelope
            job = Job(env.id, env.task, env.args, env.kwargs, env.queue, env.retries,
                      env.max_retries, env.timeout, env.soft_timeout, env.root_id, env.parent_id,
                      env.group_id, env.headers)
            ctx = DispatchContext(env, held.delivery, job, self.name)
            try:
                outcome = await self._dispatchers[id(lane)](ctx)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in middleware or a pool must not kill the worker
                log.exception("dispatch of %s[%s] failed", env.task, env.id)
                outcome = Crashed(f"{type(exc).__name__}: {exc}", 0.0)
        finally:
            lane.release_slot()
            if self._alone is held:
                self._alone = None
                for other in self.lanes:
                    other.room.set()
        if id(held) in self._held:
            self._settle(held, outcome)

    async def _clear_the_floor(self, held: _Held) -> None:
        """Run a message on its last delivery alone, so that a crash is surely its own.

        A message that killed its worker before comes back with one more attempt, and so does
        everything that worker held beside it. Before the last attempt this worker gives its
        unstarted deliveries back (uncounted), lets running tasks finish and fetches nothing,
        so a death now counts against this message only.
        """
        while self._alone is not None and self._alone is not held:
            await self._floor_changed()
        self._alone = held
        log.warning("message %s (task %s) was delivered %d times without finishing; running it "
                    "alone", held.envelope.id, held.envelope.task, held.delivery.attempts)
        others = [h for h in self._held.values() if h is not held and h.started_at is None]
        for other in others:
            self._forget(other)
            if other.runner is not None:
                other.runner.cancel()
        if others:
            # Given back now, not by the flusher later: this task may kill the worker at once.
            assert self._transport is not None
            try:
                await self._transport.release([h.delivery for h in others])
            except HubbubError:
                self._queue_release([h.delivery for h in others])
        while any(h is not held and h.started_at is not None for h in self._held.values()):
            await self._floor_changed()

    async def _floor_changed(self) -> None:
        self._floor.clear()
        await self._floor.wait()


    def _settle(self, held: _Held, outcome: Outcome) -> None:
        env, task = held.envelope, held.task
        self._forget(held)
        self.processed += 1
        if isinstance(outcome, Succeeded):
            log.info("task %s[%s] succeeded in %.3fs", env.task, env.id, outcome.duration)
            self._record(held, State.SUCCESS, value=outcome.value)
            self._queue(ack=[held.delivery])
            self.hub.events.emit(TaskSucceeded(env.id, env.task, outcome.duration, self.name))
            return
        error, retry, countdown = _describe(outcome, task)
        will_retry = retry and env.retries < env.max_retries
        self.hub.events.emit(TaskFailed(env.id, env.task, outcome.duration, self.name,
                                        f"{error.type}: {error.message}", will_retry))
        if will_retry:
            spec = task.spec
            if countdown is None:
                countdown = backoff(spec.retry_backoff, spec.retry_backoff_max, env.retries,
                                    spec.retry_jitter)
            log.warning("task %s[%s] failed in %.3fs (%s: %s); retry %d/%d in %.1fs", env.task,
                        env.id, outcome.duration, error.type, error.message, env.retries + 1,
                        env.max_retries, countdown)
            nxt = env.next_attempt(time.time() + countdown)
            codec = BY_CONTENT_TYPE[env.content_type]
            body = encode(nxt, codec, self._max_size, self.hub.signer)
            self._record(held, State.RETRY, error=error)
            self._queue(publish=[Outgoing(env.queue, body, env.id, env.priority, nxt.eta)],
                        ack=[held.delivery])
            return
        tries = f" after {env.retries} retries" if env.retries else ""
        log.error("task %s[%s] failed in %.3fs%s: %s: %s", env.task, env.id, outcome.duration,
                  tries, error.type, error.message)
        self._record(held, State.FAILURE, error=error)
        self._queue(dead=[DeadLetterRequest(held.delivery,
                                            f"{error.type}: {error.message}{tries}")])

    def _forget(self, held: _Held) -> None:
        if self._held.pop(id(held), None) is not None:
            held.lane.held -= 1
            held.lane.room.set()
            self._floor.set()

    def _record(self, held: _Held, state: State, *, value: Any = None,
                error: ErrorInfo | None = None) -> None:
        if held.task.spec.ignore_result or self.hub.settings.results is None:
            return
        env = held.envelope
        done = state in {State.SUCCESS, State.FAILURE, State.REVOKED}
        self._writes.records[env.id] = ResultRecord(
            env.id, state, env.task, value, error, env.retries, self.name, env.created_at,
            held.started_at, time.time() if done else None,
        )
        self._wake_flusher()

    # -- batched writes ----------------------------------------------------------------------

    def _queue(self, *, publish: Sequence[Outgoing] = (), ack: Sequence[Delivery] = (),
               dead: Sequence[DeadLetterRequest] = ()) -> None:
        self._writes.publish.extend(publish)
        self._writes.ack.extend(ack)
        self._writes.dead.extend(dead)
        self._wake_flusher()

    def _queue_release(self, deliveries: Sequence[Delivery]) -> None:
        self._writes.release.extend(deliveries)
        self._wake_flusher()

    def _wake_flusher(self) -> None:
        if self._flush_wanted is not None:
            self._flush_wanted.set()

    _closing = False
    _flushing: _Writes | None = None
    _max_size = 0

    async def _flush_forever(self, transport: Transport, results: ResultBackend | None) -> None:
        assert self._flush_wanted is not None
        delay = RETRY_IO[0]
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            writes, self._writes = self._writes, _Writes()
            self._flushing = writes
            try:
                await self._flush(writes, transport, results)
                delay = RETRY_IO[0]
                self._flushed.set()
            except HubbubError as exc:
                log.warning("writing results, retries or acks failed (%s); retrying in %.1fs",
                            redact(str(exc)), delay)
                self._writes = _merge(writes, self._writes)
                if self._closing and delay >= RETRY_IO[1]:
                    log.error("giving up on %d pending writes at shutdown; their messages "
                              "come back after the lease", len(writes.ack) + len(writes.dead))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_IO[1])
                self._flush_wanted.set()
                continue
            if self._closing and not self._writes:
                return

    async def _flush(self, writes: _Writes, transport: Transport,
                     results: ResultBackend | None) -> None:
        # Order matters for at-least-once: a retry is published before the original is acked,
        # and a result is stored before its message is acked.
        if writes.publish:
            await transport.publish(writes.publish)
            writes.publish = []
        if writes.records and results is not None:
            await results.store(list(writes.records.values()), ttl=self.hub.settings.result_ttl)
        writes.records = {}
        if writes.release:
            await transport.release(writes.release)
            writes.release = []
        if writes.ack:
            await transport.ack(writes.ack)
            writes.ack = []
        if writes.dead:
            await transport.dead_letter(writes.dead)
            writes.dead = []

    # -- background --------------------------------------------------------------------------

    async def _renew_forever(self, transport: Transport) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.lease / 3
            self._started_lately.clear()
            await asyncio.sleep(self.lease / 3)
            late = loop.time() - due
            if late > self.lease / 3:
                # Renewal runs on this loop: a task that blocked it starved the renewals.
                running = sorted(self._started_lately | {h.envelope.task for h in
                                 self._held.values() if h.started_at is not None})
                log.error("the event loop was blocked for %.1fs; leases (%.0fs) may have run out "
                          "and held tasks may run twice. Running: %s. Move blocking code into "
                          "sync tasks (they run in threads) or raise --lease.", late, self.lease,
                          ", ".join(running) or "-")
            # Finished work whose ack waits for the flusher (e.g. the result store is down)
            # keeps its lease too, or it would run again elsewhere.
            held = [h.delivery for h in self._held.values()] + [
                d for w in (self._writes, self._flushing) if w is not None
                for d in (*w.ack, *(r.delivery for r in w.dead))
            ]
            if not held:
                continue
            try:
                lost = await transport.extend(held, lease=self.lease)
            except HubbubError as exc:
                log.warning("lease renewal failed (%s); will try again", redact(str(exc)))
                continue
            for delivery in lost:
                log.warning("lease of message %s was lost; another worker may run it too",
                            delivery.id)

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            self.hub.events.emit(WorkerHeartbeat(self.name, self.running, self.processed))


def _runner(pool: Pool) -> DispatchNext:
    async def run(ctx: DispatchContext) -> Outcome:
        return await pool.run(ctx.job)

    return run


def _describe(outcome: Outcome, task: Task[Any, Any]) -> tuple[ErrorInfo, bool, float | None]:
    """The error, whether to retry, and any countdown asked for, for a failed outcome."""
    if isinstance(outcome, Failed):
        return outcome.error, outcome.retry, outcome.countdown
    if isinstance(outcome, Rejected):
        return ErrorInfo("Rejected", outcome.reason), False, None
    if isinstance(outcome, Crashed):
        return (ErrorInfo("TaskCrashed", outcome.reason), task.spec.on_crash == "retry", None)
    if isinstance(outcome, TimedOut):
        error = ErrorInfo("TaskTimedOut", f"ran past its time limit of {outcome.limit}s")
        return error, False, None
    raise TypeError(f"not a failed outcome: {outcome!r}")


def _merge(failed: _Writes, newer: _Writes) -> _Writes:
    newer.records = {**failed.records, **newer.records}
    for name in ("publish", "ack", "dead", "release"):
        setattr(newer, name, getattr(failed, name) + getattr(newer, name))
    return newer


async def _first(*aws: Any) -> None:
    """Wait until the first of ``aws`` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
    for t in done:
        if not t.cancelled():
            t.exception()  # seen: a timeout here is an expected way to finish
