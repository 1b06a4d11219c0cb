"""``Announcer``: the worker's heartbeat, as an event and as its worker registry entry.

The entry (:mod:`hubbub.control.registry`) is written when the worker comes online, again
with every beat (live for three beats, so a killed worker drops out after three missed
ones) and deleted on a clean stop. Writing it must never slow or stop the worker: it runs
on its own task, each write is bounded by one heartbeat, and a failed write is logged at
debug and tried again at the next beat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from hubbub.control.registry import (
    BEATS_TO_LIVE,
    MAX_TASKS,
    LaneEntry,
    Registry,
    WorkerInfo,
)
from hubbub.events import WorkerHeartbeat
from hubbub.results.base import ResultBackend

if TYPE_CHECKING:
    from hubbub.worker.loop import WorkerLoop

log = logging.getLogger("hubbub.worker")

FORGET_WITHIN = 2.0  # seconds a clean stop waits for the entry to be deleted


class Announcer:
    """Beats for ``worker`` every ``worker.heartbeat`` seconds.

    Args:
        worker: the running worker, read for its name, lanes and counters.
        results: its connected result store, or None when the hub keeps no results (then
            there is no registry entry, and the worker says so once).
    """

    def __init__(self, worker: WorkerLoop, results: ResultBackend | None) -> None:
        self.worker = worker
        self.registry = None if results is None else Registry(results)
        self.started_at = time.time()

    def info(self) -> WorkerInfo:
        """The worker's entry as of now."""
        w = self.worker
        lanes = [LaneEntry(tuple(lane.queues), lane.pool.kind, lane.pool.concurrency,
                           lane.autoscale) for lane in w.lanes]
        return WorkerInfo.here(w.name, lanes, started_at=self.started_at,
                               processed=w.processed, failed=w.failed, running=w.running,
                               tasks=w.running_now(MAX_TASKS))

    async def announce(self) -> None:
        """Write the entry now, before the worker says it is online: a broadcast sent once
        it is up waits for its answer (a broadcast waits for the workers in the registry)."""
        if self.registry is None:
            log.info("worker %s keeps no registry entry: the hub has no result store",
                     self.worker.name)
        await self._write()

    async def beat_forever(self) -> None:
        """After :meth:`announce`: emit a heartbeat and write the entry again every beat."""
        every = self.worker.heartbeat
        while True:
            await asyncio.sleep(every)
            w = self.worker
            w.hub.events.emit(WorkerHeartbeat(w.name, w.running, w.processed))
            await self._write()

    async def _write(self) -> None:
        if self.registry is None:
            return
        every = self.worker.heartbeat
        try:
            await asyncio.wait_for(self.registry.announce(self.info(), ttl=every * BEATS_TO_LIVE),
                                   timeout=every)
        except Exception as exc:  # the store is down or slow: try again next beat
            log.debug("registry entry of %s not written (%r); retrying next beat",
                      self.worker.name, exc)

    async def forget(self) -> None:
        """Delete the entry (a clean stop); gives up quietly after ``FORGET_WITHIN`` s."""
        if self.registry is None:
            return
        try:
            await asyncio.wait_for(self.registry.forget(self.worker.name), FORGET_WITHIN)
        except Exception as exc:  # it expires by itself after three beats
            log.debug("registry entry of %s not deleted (%r)", self.worker.name, exc)
