"""``WorkerLoop``: the worker's one event loop, the only place that talks to the broker.

It fetches in batches no larger than its free slots plus a small prefetch, asks
:mod:`~hubbub.worker.admission` whether each delivery may run, hands jobs to its pools and
turns each outcome into writes through :mod:`~hubbub.worker.settlement`; the
:class:`~hubbub.worker.writes.WriteBuffer` writes them in batches. Leases of every held or
finished-but-unacked delivery are renewed, so a long task is never handed to another worker.
Shutdown releases unstarted deliveries at once and waits for running ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hubbub._redact import redact
from hubbub.control.publisher import EventPublisher
from hubbub.control.wire import received_row, started_row
from hubbub.errors import ConfigurationError, HubbubError, WriteBackFailed
from hubbub.events import (
    LaneInfo,
    TaskReceived,
    TaskRevoked,
    TaskStarted,
    WorkerOffline,
    WorkerOnline,
)
from hubbub.job import Crashed, Job, Outcome
from hubbub.middleware import DispatchContext, DispatchNext, chain_dispatch
from hubbub.results.base import State
from hubbub.transports.base import Delivery, Transport
from hubbub.worker.admission import Admission, Refused
from hubbub.worker.announce import Announcer
from hubbub.worker.execute import exception_text
from hubbub.worker.gates import Gates, check_store
from hubbub.worker.held import Held, HeldSet
from hubbub.worker.lane import Lane
from hubbub.worker.outcomes import Outcomes
from hubbub.worker.pools.coroutines import AsyncPool
from hubbub.worker.progress import Progress
from hubbub.worker.renewal import Renewal
from hubbub.worker.revocation import Revocations
from hubbub.worker.sources import Routed
from hubbub.worker.wiring import (
    CONTROL_OPEN_WITHIN,
    RemoteControl,
    Wiring,
    open_control,
    start_publisher,
)
from hubbub.worker.writes import RETRY_IO, WriteBuffer

if TYPE_CHECKING:
    from hubbub.hub import Hub
    from hubbub.metrics import WorkerMetrics
    from hubbub.worker.pools.base import Pool

__all__ = ["WorkerLoop"]

log = logging.getLogger("hubbub.worker")

FETCH_WAIT = 0.5  # seconds one fetch may wait; bounds how long a stop waits for the fetcher
# With stop_when_idle (drain() in tests), an empty fetch is what triggers the idle check: a
# short wait lets a drained worker stop within ~0.1 s instead of FETCH_WAIT. The queues must
# look idle twice in a row: a broker's stats are not one snapshot (RabbitMQ's are read queue
# by queue), and a delayed message moving between delay levels can be missed by one look.
IDLE_FETCH_WAIT = 0.05
IDLE_LOOKS = 2
ROOM_LOOK = 1.0  # seconds a fetcher without room waits before it looks again
RECHECK_AFTER = 0.05  # seconds after admission a task's start looks at revokes again


class WorkerLoop(RemoteControl):
    """Consumes ``queues`` and runs their tasks on ``pool``.

    Args:
        hub: the application whose tasks it runs.
        queues: queue names to consume (default: the hub's default queue).
        pool: where tasks run (default: ``AsyncPool()``).
        prefetch: deliveries held beyond the free slots (default: min(concurrency, 16)).
        grace: seconds a graceful stop waits for running tasks.
        name: this worker's name in logs and events (default host:pid).
        heartbeat: seconds between heartbeats (events and the worker registry entry).
        stop_when_idle: stop once the queues have nothing ready, delayed or leased (tests,
            batch jobs).
        lease: seconds a delivery stays leased without renewal (default: the hub's).
        lanes: several (queues, pool) pairs served by this one worker, instead of
            ``queues``/``pool``/``prefetch``.
        events: publish every event on the plane's ``events`` channel (``hubbub events``
            shows them); default: the hub's ``events`` setting (off).
        metrics: serve Prometheus metrics while running (``hubbub.metrics.WorkerMetrics``).

    Raises:
        ConfigurationError: lanes given together with queues or pool, or a queue in two lanes.
    """

    def __init__(
        self, hub: Hub, *, queues: Sequence[str] | None = None, pool: Pool | None = None,
        prefetch: int | None = None, grace: float = 30.0, name: str | None = None,
        heartbeat: float = 2.0, stop_when_idle: bool = False, lease: float | None = None,
        lanes: Sequence[Lane] | None = None, events: bool | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        if lanes and (queues or pool):
            raise ConfigurationError("give lanes, or queues and a pool, not both")
        self.hub = hub
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
        self._admission = Admission(hub)
        self._held = HeldSet()
        self._dispatchers: dict[int, DispatchNext | None] = {}
        self._failure: BaseException | None = None  # why the write-back machinery died
        self._stopping = asyncio.Event()
        self._aborting = asyncio.Event()
        self._wiring: Wiring | None = None  # what run() connected
        self._revocations: Revocations | None = None  # when results (and revokes) are kept
        self.events = hub.settings.events if events is None else events
        self._publisher: EventPublisher | None = None  # with events on, while running
        self.metrics = metrics  # -- metrics (issue 15): None costs nothing per task
        self._gates: Gates | None = None  # -- limits: when results (and limits) are kept --

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Graceful stop: fetch no more, release unstarted work, let running tasks finish."""
        self._stopping.set()
        for lane in self.lanes:
            lane.room.set()  # a fetcher waiting for room sees the stop at once

    @property
    def stopping(self) -> bool:
        """A stop was asked for (a signal, remote control, or the idle stop)."""
        return self._stopping.is_set()

    def abort(self) -> None:
        """Second stop: release running work too and exit without waiting for it."""
        self.stop()
        self._aborting.set()

    @property
    def running(self) -> int:
        """Tasks running now, over every lane."""
        return sum(lane.running for lane in self.lanes)

    @property
    def failed(self) -> int:
        """Tasks that ended in FAILURE (``processed`` counts them too)."""
        return 0 if self._wiring is None else self._wiring.outcomes.failed

    # -- main ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until ``stop()``/``abort()`` (or idle, with ``stop_when_idle``).

        Raises:
            TransportUnavailable: the broker cannot be reached at start.
            ConfigurationError: a pool cannot start (e.g. the app cannot be imported).
            WriteBackFailed: results and acks could no longer be written; the worker stopped
                at once so that a supervisor restarts it (unacked work comes back).
        """
        self._stopping, self._aborting = asyncio.Event(), asyncio.Event()
        self._failure = None
        check_store(self.hub)  # -- limits --
        transport: Transport = self.hub.open_transport()
        # -- Celery bridge (issue 17): lanes with a source of their own (Celery's queues)
        # reach it through the one Transport the write buffer and the renewer use.
        sources = [lane.source for lane in self.lanes if lane.source is not None]
        if sources:
            transport = Routed(transport, sources)
        # -- end Celery bridge
        results = self.hub.open_results()
        async with contextlib.AsyncExitStack() as stack:
            if any(lane.pool.in_process for lane in self.lanes):
                # Tasks run in this process: its on_process_start hooks run first (a failing
                # one stops the worker before it takes anything), the stop hooks last.
                self.hub.hooks.start_process()
                stack.callback(self.hub.hooks.stop_process)
            await transport.connect()
            stack.push_async_callback(transport.close)
            if results is not None:
                await results.connect()
                stack.push_async_callback(results.close)
            for lane in self.lanes:
                await lane.pool.start(self.hub)
                stack.push_async_callback(lane.pool.stop)
                middleware = [*self.hub.middleware, *lane.middleware]
                # None: no middleware, the pool runs the job straight (no context, no layer).
                self._dispatchers[id(lane)] = (chain_dispatch(middleware, _runner(lane.pool))
                                               if middleware else None)
            writes = WriteBuffer(transport, results, self.hub.settings.result_ttl)
            outcomes = Outcomes(self.hub, self.name, writes, self.hub.max_message_size(transport))
            self._wiring = Wiring(
                transport, results, writes, outcomes,
                Renewal(transport, self.lease, self._renewable, self._held.running_tasks),
                Progress(asyncio.get_running_loop(), outcomes.progress))
            self._gates = Gates.wire(results, writes, self._held, outcomes,  # -- limits --
                                     self._wiring.renewal, self.lease)
            if self.metrics is not None:  # -- metrics (issue 15): served while connected
                self.metrics.start(self, transport)
                stack.callback(self.metrics.stop)
            await self._serve(transport, writes)
        if self._failure is not None:
            raise WriteBackFailed(f"the worker stopped: writing results and acks broke "
                                  f"({self._failure!r})") from self._failure

    async def _serve(self, transport: Transport, writes: WriteBuffer) -> None:
        control = await open_control(self)
        lanes = tuple(LaneInfo(tuple(lane.queues), lane.pool.kind, lane.pool.concurrency)
                      for lane in self.lanes)
        publisher = self._publisher = start_publisher(self.hub, self.events)
        announcer = Announcer(self, self._io.results)
        await announcer.announce()  # in the registry before "online" (bounded by a beat)
        self.hub.events.emit(WorkerOnline(self.name, tuple(self.queues), self.pool.kind,
                                          sum(lane.concurrency for lane in lanes), lanes))
        log.info("worker %s online: broker %s, %s", self.name, redact(self.hub.settings.broker),
                 "; ".join(f"queues {','.join(lane.queues)} on pool {lane.pool} "
                           f"x{lane.concurrency}" for lane in lanes))
        for lane in self.lanes:  # -- Celery bridge (issue 17): say where those queues are
            if lane.source is not None:
                log.info("queues %s are read from %r", ",".join(lane.queues), lane.source)
        flusher = asyncio.create_task(writes.flush_forever())
        flusher.add_done_callback(self._flusher_ended)
        helpers = [asyncio.create_task(self._io.renewal.renew_forever()),
                   asyncio.create_task(announcer.beat_forever())]
        if self._io.results is not None:
            self._revocations = Revocations(self._io.results, self._held, self._io.writes)
            helpers.append(asyncio.create_task(self._revocations.watch_forever()))
        if self._gates is not None:  # -- limits --
            helpers.append(asyncio.create_task(self._gates.serve(self._revocations)))
        try:
            await asyncio.gather(*(self._fetch_forever(transport, lane) for lane in self.lanes))
            await self._wind_down()
        finally:
            for helper in helpers:
                helper.cancel()
            if control is not None:
                control.cancel()
                # It closes the plane, within bounds of its own (hubbub.control.responder).
                await asyncio.wait([control], timeout=3 * CONTROL_OPEN_WITHIN)
            writes.closing = True
            writes.wake()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(flusher, timeout=30)
            await announcer.forget()
            self.hub.events.emit(WorkerOffline(self.name, self.processed))
            log.info("worker %s offline after %d tasks", self.name, self.processed)
            if publisher is not None:
                self._publisher = None
                await publisher.close()

    def _flusher_ended(self, flusher: asyncio.Task[None]) -> None:
        if flusher.cancelled() or flusher.exception() is None:
            return
        # Running on without writing results and acks would rerun everything later: stop
        # now, and let run() end the process with an error so that a supervisor restarts it.
        self._failure = flusher.exception()
        log.critical("the worker's write-back failed (%r); stopping at once",
                     self._failure, exc_info=self._failure)
        self.abort()

    async def _fetch_forever(self, transport: Transport, lane: Lane) -> None:
        writes, delay = self._io.writes, RETRY_IO[0]
        idle_looks = 0
        loop = asyncio.get_running_loop()
        look: asyncio.TimerHandle | None = None  # wakes a fetcher that waits for room
        while not self._stopping.is_set():
            await lane.autoscale_step()
            room = 0 if self._held.isolating else lane.budget
            if writes.unsettled() >= self._capacity():
                # Finished work is not acked yet (a slow flush, or the broker or the result
                # store is down): fetch nothing more until a flush goes through, or the
                # backlog would grow without bound.
                writes.flushed.clear()
                await _first(writes.flushed.wait(), self._stopping.wait(), asyncio.sleep(1.0))
                continue
            if room <= 0:
                # Woken by lane.wake() when a settled task makes room, or by a stop; looks
                # again within a second anyway (autoscale, a wake that a rare path skipped),
                # by one timer that serves every wait until it fires: a busy fetcher waits
                # for room once per batch, and a timer each time cost more than the wait.
                lane.room.clear()
                if look is None or look.when() <= loop.time():
                    look = loop.call_later(ROOM_LOOK, lane.room.set)
                await lane.room.wait()
                continue
            failed: Exception | None = None
            with self._held.fetching():  # what it claims must not run beside a lone message
                try:
                    deliveries = await transport.fetch(
                        lane.queues, limit=room, lease=self.lease,
                        wait=IDLE_FETCH_WAIT if self.stop_when_idle else FETCH_WAIT)
                except Exception as exc:  # a broker outage, or a transport bug on odd data
                    failed, deliveries = exc, []
                if deliveries and self._held.isolating:
                    # Claimed while a message runs alone: back to the broker (not an attempt)
                    # before it starts, or its death would count against these too.
                    self._io.writes.release(deliveries)
                elif deliveries:
                    await self._admit(deliveries, lane)
            if failed is not None:
                if not isinstance(failed, HubbubError):
                    log.error("fetch from %s raised %r", lane.queues, failed, exc_info=failed)
                log.warning("fetch failed (%s); retrying in %.1fs", redact(str(failed)), delay)
                await _first(asyncio.sleep(delay), self._stopping.wait())
                delay = min(delay * 2, RETRY_IO[1])
                continue
            delay = RETRY_IO[0]
            if not deliveries and self.stop_when_idle and await self._idle(transport):
                idle_looks += 1
                if idle_looks >= IDLE_LOOKS:
                    self._stopping.set()
            else:
                idle_looks = 0
        if look is not None:
            look.cancel()

    def _capacity(self) -> int:
        # What the lanes may hold at once, a process pool's window included: finished work
        # of one full hand-out waits for its flush without holding back the next fetch.
        return sum(lane.slots + (lane.prefetch or 0) for lane in self.lanes)

    async def _idle(self, transport: Transport) -> bool:
        if self._held or self._io.writes:
            return False
        stats = await transport.stats(self.queues)
        return all(s.ready == 0 and s.delayed == 0 and s.leased == 0 for s in stats)

    async def _wind_down(self) -> None:
        unstarted = self._held.unstarted()
        self._held.let_go(unstarted)
        self._io.writes.release([h.delivery for h in unstarted])
        if unstarted:
            log.info("released %d unstarted deliveries", len(unstarted))
        running = [h.runner for h in self._held if h.runner is not None]
        if running:
            log.info("waiting up to %.0fs for %d running tasks", self.grace, len(running))
            waiter = asyncio.gather(*running, return_exceptions=True)
            await _first(asyncio.wait_for(asyncio.shield(waiter), self.grace),
                         self._aborting.wait())
        leftover = list(self._held)
        if leftover:
            log.warning("releasing %d running tasks unfinished; they will run again",
                        len(leftover))
            self.abandoned = len(leftover)
            self._held.let_go(leftover)
            self._io.writes.release([h.delivery for h in leftover])

    # -- admission ---------------------------------------------------------------------------

    async def _admit(self, deliveries: list[Delivery], lane: Lane) -> None:
        accepted: list[Held] = []
        for delivery in deliveries:
            verdict = self._admission.check(delivery, lane.source)
            if isinstance(verdict, Refused):
                self._io.outcomes.refused(delivery, verdict)
            else:
                accepted.append(Held(delivery, verdict.envelope, verdict.task, lane))
        final = (await self._revocations.final_states([h.envelope.id for h in accepted])
                 if self._revocations is not None and accepted else {})
        now, looked = time.time(), time.monotonic()
        bus, publisher = self.hub.events, self._publisher
        # Whether this batch may start at once, as far as the batch says (see _run_now).
        quick = (self._dispatchers[id(lane)] is None and not self._stopping.is_set()
                 and not self._held.isolating)
        listening = bus.listening_besides(None if publisher is None else publisher.capture)
        for held in accepted:
            env = held.envelope
            state = final.get(env.id)
            if publisher is not None:  # as a row: no event object on the way of every task
                publisher.record(received_row(now, env.id, env.task, held.delivery.queue,
                                              self.name))
            if listening:
                bus.emit(TaskReceived(env.id, env.task, held.delivery.queue, self.name))
            if state is not None:
                # Revoked, or it already succeeded: a redelivery after its result was stored,
                # or a replayed message. Either way it must not run (again).
                log.info("task %s[%s] is %s already; skipped", env.task, env.id, state.value)
                if state == State.REVOKED and env.canvas:  # -- canvas: the rest never runs
                    self._io.outcomes.revoked_step(env)
                self._io.writes.ack([held.delivery])
                if state == State.REVOKED:
                    bus.emit(TaskRevoked(env.id, env.task, self.name, "revoked"))
                if self._gates is not None:  # -- limits --
                    self._gates.settled(env)
            elif env.expires is not None and env.expires <= now:
                self._io.outcomes.expired(held)
            else:
                held.admitted_at = looked
                self._held.add(held)
                if not (quick and self._run_now(held)):
                    held.runner = asyncio.create_task(self._execute(held))

    def _run_now(self, held: Held) -> bool:
        """Start ``held`` at once, without a task of its own, if nothing needs waiting for:
        a free slot, a pool that takes the job now (``Pool.submit``), no fleet-wide limit, not
        its last delivery (and, checked by ``_admit`` for the batch: no dispatch middleware,
        no stop, no message running alone). Its outcome is settled by a callback
        (``_ran``). The common case of a busy worker of short tasks on a process pool: a task
        object per job, and its two turns, cost more than the rest of the hand-out.

        Returns:
            False: it was not started; ``_execute`` takes it the long way.
        """
        lane, attempts = held.lane, held.delivery.attempts
        if (self._last_chance(attempts)
                or (self._gates is not None and self._gates.applies(held))
                or not lane.take_slot()):
            return False
        job = Job.from_envelope(held.envelope)
        future = lane.pool.submit(job)
        if future is None:
            lane.release_slot()
            return False
        held.runner = future
        self._begin(held, attempts)
        future.add_done_callback(functools.partial(self._ran, held))
        return True

    def _last_chance(self, attempts: int) -> bool:
        """Whether a delivery on its ``attempts``-th try is on its last allowed one after a
        death: it runs alone (``HeldSet.alone``)."""
        return attempts > 1 and attempts >= self.hub.settings.limits.max_deliveries

    def _ran(self, held: Held, future: asyncio.Future[Outcome]) -> None:
        """``held``, started by ``_run_now``, ended: as the end of ``_execute``."""
        io = self._wiring
        assert io is not None, "the worker is not running"  # it runs while it holds tasks
        io.progress.ended(held)
        self._slot_freed(held)
        if not future.cancelled():  # cancelled: let go (a stop, or revoked), as _execute
            self._settle(held, future.result())

    # -- running -----------------------------------------------------------------------------

    async def _execute(self, held: Held) -> None:
        lane = held.lane
        # -- limits: fleet-wide rate and concurrency, passed before a pool slot is taken --
        gates = self._gates
        if gates is not None and gates.applies(held) and not await gates.admit(held):
            return  # given back to the broker until its limit lets it start
        await lane.acquire()
        try:
            if self._stopping.is_set():
                return  # _wind_down releases it
            expires = held.envelope.expires
            if expires is not None and expires <= time.time():
                # It expired while it waited for a slot: it must not start now.
                self._held.forget(held)
                self._io.outcomes.expired(held)
                return
            if (self._revocations is not None
                    and time.monotonic() - held.admitted_at > RECHECK_AFTER):
                # It waited for a slot: revoked meanwhile, it must not start now.
                state = await self._revocations.state_now(held.envelope.id)
                if state is not None and held in self._held:
                    log.info("task %s[%s] is %s already; skipped", held.envelope.task,
                             held.envelope.id, state.value)
                    self._held.forget(held)
                    self._io.writes.ack([held.delivery])
                    if state == State.REVOKED:
                        self.hub.events.emit(TaskRevoked(held.envelope.id, held.envelope.task,
                                                         self.name, "revoked"))
                    if gates is not None:  # -- limits --
                        gates.settled(held.envelope)
                    return
                if held not in self._held:
                    return  # given back or dropped while it looked
            attempts = held.delivery.attempts
            if self._last_chance(attempts):
                await self._held.alone(held, self._give_back)
                # What ran beside it is acked first: if this one kills the worker, a task that
                # finished before it must not come back (past its own limit) as a poison.
                await self._io.writes.settled()
            io, env = self._io, held.envelope
            job = Job.from_envelope(env)
            dispatch = self._dispatchers[id(lane)]
            self._begin(held, attempts)
            try:
                if dispatch is None:
                    outcome = await lane.pool.run(job)
                else:
                    outcome = await dispatch(DispatchContext(env, held.delivery, job, self.name))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in middleware or a pool must not kill the worker
                log.exception("dispatch of %s[%s] failed", held.envelope.task, held.envelope.id)
                outcome = Crashed(exception_text(exc), 0.0)
            finally:
                io.progress.ended(held)
        finally:
            self._slot_freed(held)
        self._settle(held, outcome)

    def _begin(self, held: Held, attempt: int) -> None:
        """``held`` starts now: its STARTED state, lease renewal, progress and events."""
        io, env = self._wiring, held.envelope
        assert io is not None, "the worker is not running"
        held.started_at = time.time()
        io.renewal.started(env.task)
        io.outcomes.record(held, State.STARTED)
        io.progress.started(held)
        self._started(held, attempt)
        if self.metrics is not None:  # -- metrics (issue 15): the wait histogram
            self.metrics.started(held)

    def _slot_freed(self, held: Held) -> None:
        held.lane.release_slot()
        if self._held.done_alone(held):
            for other in self.lanes:
                other.room.set()

    def _settle(self, held: Held, outcome: Outcome) -> None:
        """``held`` ran to ``outcome``: its writes, unless it was let go meanwhile."""
        if held in self._held:
            self._held.forget(held)
            self.processed += 1
            io = self._wiring
            assert io is not None, "the worker is not running"
            io.outcomes.finished(held, outcome)

    def _started(self, held: Held, attempt: int) -> None:
        """The task-started event, for the publisher (a row) and the bus (if anyone else
        listens); nothing at all when nobody does."""
        env, bus, publisher = held.envelope, self.hub.events, self._publisher
        if publisher is not None:
            publisher.record(started_row(held.started_at or 0.0, env.id, env.task,
                                         held.delivery.queue, self.name, attempt))
        if bus.listening_besides(None if publisher is None else publisher.capture):
            bus.emit(TaskStarted(env.id, env.task, held.delivery.queue, self.name, attempt))

    async def _give_back(self, deliveries: list[Delivery]) -> None:
        # At once, not by the flusher later: the task that runs next may kill the worker.
        try:
            await self._io.transport.release(deliveries)
        except HubbubError:
            self._io.writes.release(deliveries)

    # -- background --------------------------------------------------------------------------

    def _renewable(self) -> list[Delivery]:
        # Finished work whose ack waits for the flusher (e.g. the result store is down)
        # keeps its lease too, or it would run again elsewhere.
        return self._held.deliveries() + self._io.writes.settling()


def _runner(pool: Pool) -> DispatchNext:
    async def run(ctx: DispatchContext) -> Outcome:
        return await pool.run(ctx.job)

    return run


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
