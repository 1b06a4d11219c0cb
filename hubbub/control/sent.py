"""``SentEvents``: the task-sent events of a producer whose hub has ``events`` on.

One plane message per publish call (however many tasks it sent), written after the broker
took the tasks, on the event loop that sent them: the bridge loop's ``SentEvents`` for sync
sends, and each other loop's own (``SentEvents.for_another_loop``) for async ones, so that an
async send never hops threads. The events are a view: an outage of the plane is logged once
(for all loops) and costs the events, never the send.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hubbub._redact import redact
from hubbub.control.plane import Plane
from hubbub.control.publisher import CHANNEL
from hubbub.control.wire import encode_batch
from hubbub.events import Event, EventBus, TaskSent
from hubbub.message import Envelope

__all__ = ["SentEvents"]

log = logging.getLogger("hubbub.events")

RETRY_AFTER = 5.0  # seconds a producer sends without events after the plane failed


@dataclass
class _Outage:
    """Whether the plane failed, shared by a producer's ``SentEvents`` on every loop: a
    server running a loop per request neither logs nor waits for a down plane per loop."""

    failing: bool = False
    retry_at: float = 0.0  # monotonic time before which a failed plane is not tried


class SentEvents:
    """Emits and publishes ``task-sent`` for what a producer sends, on one event loop.

    Args:
        bus: the hub's event bus (in-process subscribers see the events too).
        open_plane: makes the plane, on first use (on the loop that publishes).
    """

    def __init__(self, bus: EventBus, open_plane: Callable[[], Plane]) -> None:
        self.bus = bus
        self._open_plane = open_plane
        self._plane: Plane | None = None
        self._outage = _Outage()
        self.sender = f"{socket.gethostname()}:{os.getpid()}"

    def for_another_loop(self) -> SentEvents:
        """Events for another event loop: a plane of their own (opened on that loop, which
        closes it), the same bus, sender and outage."""
        other = SentEvents(self.bus, self._open_plane)
        other._outage = self._outage
        return other

    async def sent(self, envelopes: Sequence[Envelope]) -> None:
        """Report ``envelopes`` as sent; never raises for the plane."""
        now = time.time()
        events: list[tuple[float, Event]] = []
        for env in envelopes:
            event = TaskSent(env.id, env.task, env.queue, self.sender, env.eta)
            self.bus.emit(event)
            events.append((now, event))
        outage = self._outage
        if outage.failing and time.monotonic() < outage.retry_at:
            return  # the plane was down a moment ago: do not make every send wait for it
        try:
            if self._plane is None:
                plane = self._open_plane()
                await plane.connect()
                self._plane = plane
            await self._plane.publish(CHANNEL, [encode_batch(events)])
        except Exception as exc:
            if not outage.failing:
                log.warning("task-sent events cannot be published (%s); the tasks were sent",
                            redact(str(exc)) or type(exc).__name__)
            outage.failing = True
            outage.retry_at = time.monotonic() + RETRY_AFTER
            return
        if outage.failing:
            outage.failing = False
            log.warning("task-sent events are published again")

    @property
    def opened(self) -> bool:
        """Whether the plane is open (there is something to close)."""
        return self._plane is not None

    async def close(self) -> None:
        """Close the plane, if it was opened."""
        plane, self._plane = self._plane, None
        if plane is not None:
            await plane.close()
