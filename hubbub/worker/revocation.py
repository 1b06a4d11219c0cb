"""``Revocations``: acts on revokes of deliveries the worker already holds.

Admission reads the result store once per fetched batch; a task can be revoked after that,
while it waits for a slot or while it runs. Every ``every`` seconds, while the worker holds
anything, one batched read of the held ids tells which are REVOKED now: one that has not
started is dropped (acked, never run); one that runs and was revoked with
``terminate=True`` is stopped by its pool (``Pool.cancel``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from hubbub._redact import redact
from hubbub.errors import ErrorKind
from hubbub.results.base import STICKY_STATES, ResultBackend, ResultRecord, State

if TYPE_CHECKING:
    from collections.abc import Callable

    from hubbub.message import Envelope
    from hubbub.worker.held import Held, HeldSet
    from hubbub.worker.writes import WriteBuffer

log = logging.getLogger("hubbub.worker")

EVERY = 0.5  # seconds between two looks: how late a revoke may be noticed


class Revocations:
    """Polls the result store for revokes of held deliveries and acts on them.

    Args:
        results: the store that keeps revokes.
        held: the deliveries the worker holds.
        writes: where an unstarted revoked delivery's ack goes.
        every: seconds between two looks.
    """

    def __init__(self, results: ResultBackend, held: HeldSet, writes: WriteBuffer,
                 every: float = EVERY) -> None:
        self.results = results
        self.held = held
        self.writes = writes
        self.every = every
        self._stopping: set[asyncio.Future[bool]] = set()  # pool cancels under way
        self._asked: dict[str, asyncio.Future[State | None]] = {}  # the next batched look
        self._looking: asyncio.Task[None] | None = None
        # Told of each job dropped unstarted (it is settled: its unique key back, the rest of
        # its workflow fails): Outcomes.skipped, wired by the gates.
        self.skipped: Callable[[Envelope], None] | None = None

    async def final_states(self, ids: list[str]) -> dict[str, State]:
        """Ids among ``ids`` whose stored state forbids running them: REVOKED or SUCCESS (a
        replay, or a redelivery of work whose result was stored). Admission asks once per
        fetched batch; when the store cannot say, running is still right."""
        try:
            found = await self.results.get(ids)
        except Exception as exc:
            log.warning("could not read revocations (%s); running anyway", redact(repr(exc)))
            return {}
        return {i: r.state for i, r in found.items() if r.state in STICKY_STATES}

    async def state_now(self, task_id: str) -> State | None:
        """The stored state of ``task_id`` right now, if it forbids starting it (REVOKED or
        SUCCESS); None otherwise, or when the store cannot say.

        Tasks that start at about the same time share one read of the store: a saturated
        worker pays one round trip per loop turn, not one per task.
        """
        future = self._asked.get(task_id)
        if future is None:
            future = self._asked[task_id] = asyncio.get_running_loop().create_future()
        if self._looking is None:
            self._looking = asyncio.create_task(self._look())
        return await future

    async def _look(self) -> None:
        await asyncio.sleep(0)  # let every task starting in this turn ask first
        asked, self._asked, self._looking = self._asked, {}, None
        try:
            found = await self.results.get(list(asked))
        except Exception as exc:  # the store is down: start them; the watcher looks again
            log.debug("could not read revocations (%s)", redact(repr(exc)))
            found = {}
        for task_id, future in asked.items():
            record = found.get(task_id)
            state = record.state if record is not None else None
            if not future.done():
                future.set_result(state if state in STICKY_STATES else None)

    async def watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            held = list(self.held)
            if not held:
                continue
            try:
                found = await self.results.get([h.envelope.id for h in held])
            except Exception as exc:  # the store is down: the next look will tell
                log.debug("could not read revocations (%s)", redact(repr(exc)))
                continue
            for one in held:
                record = found.get(one.envelope.id)
                if record is not None and record.state == State.REVOKED:
                    self.revoked(one, record)

    def revoked(self, held: Held, record: ResultRecord) -> None:
        """``held`` was revoked after it was admitted: drop it if it has not started; stop
        it if it runs and the revoke asked to terminate."""
        if held not in self.held:
            return
        env = held.envelope
        if held.started_at is None:
            log.info("task %s[%s] revoked while it waited; skipped", env.task, env.id)
            self.held.forget(held)
            if held.runner is not None:
                held.runner.cancel()
            self.writes.ack([held.delivery])
            if self.skipped is not None:
                self.skipped(env)
        elif (record.error is not None and record.error.type == ErrorKind.TERMINATED
              and not held.terminating):
            held.terminating = True
            log.warning("task %s[%s] revoked with terminate=True; stopping it", env.task, env.id)
            stop = asyncio.ensure_future(
                held.lane.pool.cancel(env.id, "revoked with terminate=True while running"))
            self._stopping.add(stop)
            stop.add_done_callback(lambda done: self._stopped(held, done))

    def _stopped(self, held: Held, stop: asyncio.Future[bool]) -> None:
        self._stopping.discard(stop)
        if stop.cancelled():
            return
        if stop.exception() is not None or not stop.result():
            log.warning("the %s pool could not stop task %s[%s]; it runs to the end",
                        held.lane.pool.kind, held.envelope.task, held.envelope.id,
                        exc_info=stop.exception())
