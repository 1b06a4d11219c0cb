"""What a running worker is wired to, and its face to remote control and the event plane.

:class:`~hubbub.worker.loop.WorkerLoop` fetches, admits, runs and settles; what it is
connected to while it runs (:class:`Wiring`), the commands ``hubbub control`` sends it (the
:class:`RemoteControl` methods that :class:`~hubbub.control.responder.Responder` calls), and
the opening of the control plane and the event publisher live here, off the path of every
task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hubbub._client import revoke as store_revoke
from hubbub._redact import redact
from hubbub.control.planes import open_plane
from hubbub.control.publisher import PLANE_KEEPS, EventPublisher
from hubbub.control.registry import RunningTask
from hubbub.control.responder import Responder
from hubbub.errors import ConfigurationError, ResultError
from hubbub.worker.gates import Gates

if TYPE_CHECKING:
    from hubbub.hub import Hub
    from hubbub.results.base import ResultBackend
    from hubbub.transports.base import Transport
    from hubbub.worker.held import Held, HeldSet
    from hubbub.worker.lane import Lane
    from hubbub.worker.loop import WorkerLoop
    from hubbub.worker.outcomes import Outcomes
    from hubbub.worker.progress import Progress
    from hubbub.worker.renewal import Renewal
    from hubbub.worker.writes import WriteBuffer

__all__ = ["CONTROL_OPEN_WITHIN", "RemoteControl", "Wiring", "open_control", "start_publisher"]

log = logging.getLogger("hubbub.worker")

CONTROL_OPEN_WITHIN = 5.0  # seconds the start waits for the control plane's subscription


@dataclass(frozen=True, slots=True)
class Wiring:
    """What a running worker is connected to, and the collaborators built on it."""

    transport: Transport
    results: ResultBackend | None
    writes: WriteBuffer
    outcomes: Outcomes
    renewal: Renewal
    progress: Progress


class RemoteControl:
    """The worker's remote-control commands (``hubbub.control.responder`` calls them)."""

    hub: Hub
    lanes: list[Lane]
    queues: list[str]
    _held: HeldSet
    _gates: Gates | None
    _wiring: Wiring | None

    @property
    def _io(self) -> Wiring:
        if self._wiring is None:
            raise RuntimeError("the worker is not running")
        return self._wiring

    def holding(self) -> list[Held]:
        """The deliveries held now: running (``started_at`` set) or waiting for a slot."""
        return list(self._held)

    def running_now(self, limit: int) -> list[RunningTask]:
        """Up to ``limit`` of the tasks running now, longest-running first (the registry
        entry lists them for ``hubbub top``)."""
        started = [h for h in self._held if h.started_at is not None]
        started.sort(key=lambda h: h.started_at or 0.0)
        return [RunningTask(h.envelope.id, h.envelope.task, h.started_at or 0.0)
                for h in started[:limit]]

    async def set_rate_limit(self, task: str, rate: str | None) -> None:
        """The ``rate-limit`` control command: see :meth:`Gates.set_rate`.

        Raises:
            ConfigurationError: ``rate`` is not a rate, or the worker runs without a store.
            ResultError: the store failed (ResultUnavailable: it cannot be reached).
        """
        await Gates.of(self._gates).set_rate(task, rate)  # -- limits --

    async def revoke(self, ids: Sequence[str], *, terminate: bool) -> list[str]:
        """Revoke ``ids`` as ``Hub.revoke`` does, through this worker's result store; every
        worker (this one too) acts on it within ``revocation.EVERY`` seconds.

        Raises:
            ResultError: the hub keeps no results (revokes live there), or the store failed.
        """
        results = self._io.results
        if results is None:
            raise ResultError("revoke needs a result store (revokes live there); this "
                              "worker's hub keeps no results")
        return await store_revoke(results, ids, terminate=terminate,
                                  ttl=self.hub.settings.result_ttl)

    def add_queue(self, queue: str, lane: Lane) -> None:
        """Start consuming ``queue`` on ``lane``.

        Raises:
            ValueError: this worker consumes ``queue`` already.
        """
        if queue in self.queues:
            raise ValueError(f"this worker consumes {queue!r} already")
        lane.queues = [*lane.queues, queue]  # a new list: a fetch under way keeps its own
        self.queues = [q for one in self.lanes for q in one.queues]
        log.info("now consuming queue %s (lane %s)", queue, ",".join(lane.queues))
        lane.room.set()

    def cancel_queue(self, queue: str) -> None:
        """Stop consuming ``queue``; what is held from it runs to the end.

        Raises:
            ValueError: this worker does not consume ``queue``.
        """
        for lane in self.lanes:
            if queue in lane.queues:
                lane.queues = [q for q in lane.queues if q != queue]
                self.queues = [q for one in self.lanes for q in one.queues]
                log.info("no longer consuming queue %s", queue)
                return
        raise ValueError(f"this worker does not consume {queue!r}; it consumes "
                         f"{', '.join(self.queues) or 'nothing'}")


async def open_control(worker: WorkerLoop) -> asyncio.Task[None] | None:
    """Subscribe ``worker`` to the control plane and serve its commands in a task; None
    when the hub has no control plane."""
    try:
        plane = worker.hub.open_plane()
    except ConfigurationError as exc:
        log.info("remote control is off: %s", exc)
        return None
    responder = Responder(worker, plane)
    try:
        # Before "online": a command sent once the worker says it is up is seen.
        await asyncio.wait_for(responder.open(), CONTROL_OPEN_WITHIN)
    except Exception as exc:  # serve_forever tries again; the worker serves meanwhile
        log.warning("remote control: the control plane cannot be reached yet (%s)",
                    redact(str(exc)))
    return asyncio.create_task(responder.serve_forever())


def start_publisher(hub: Hub, events: bool) -> EventPublisher | None:
    """With ``events`` on, the publisher of this worker's events (started)."""
    if not events:
        return None
    settings = hub.settings
    publisher = EventPublisher(hub.events, open_plane(
        settings.broker, settings.results, maxlen=PLANE_KEEPS))
    publisher.start()
    return publisher
