"""``SentEvents``: the task-sent events of a producer whose hub has ``events`` on.

One plane message per publish call (however many tasks it sent), written after the broker
took the tasks. The events are a view: an outage of the plane is logged once and costs the
events, never the send.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence

from hubbub._redact import redact
from hubbub.control.plane import Plane
from hubbub.control.publisher import CHANNEL
from hubbub.control.wire import encode_batch
from hubbub.events import Event, EventBus, TaskSent
from hubbub.message import Envelope

__all__ = ["SentEvents"]

log = logging.getLogger("hubbub.events")

RETRY_AFTER = 5.0  # seconds a producer sends without events after the plane failed


class SentEvents:
    """Emits and publishes ``task-sent`` for what a producer sends.

    Args:
        bus: the hub's event bus (in-process subscribers see the events too).
        open_plane: makes the plane, on first use (on the loop that publishes).
    """

    def __init__(self, bus: EventBus, open_plane: Callable[[], Plane]) -> None:
        self.bus = bus
        self._open_plane = open_plane
        self._plane: Plane | None = None
        self._failing = False
        self._retry_at = 0.0  # monotonic time before which a failed plane is not tried
        self.sender = f"{socket.gethostname()}:{os.getpid()}"

    async def sent(self, envelopes: Sequence[Envelope]) -> None:
        """Report ``envelopes`` as sent; never raises for the plane."""
        now = time.time()
        events: list[tuple[float, Event]] = []
        for env in envelopes:
            event = TaskSent(env.id, env.task, env.queue, self.sender, env.eta)
            self.bus.emit(event)
            events.append((now, event))
        if self._failing and time.monotonic() < self._retry_at:
            return  # the plane was down a moment ago: do not make every send wait for it
        try:
            if self._plane is None:
                plane = self._open_plane()
                await plane.connect()
                self._plane = plane
            await self._plane.publish(CHANNEL, [encode_batch(events)])
        except Exception as exc:
            if not self._failing:
                log.warning("task-sent events cannot be published (%s); the tasks were sent",
                            redact(str(exc)) or type(exc).__name__)
            self._failing = True
            self._retry_at = time.monotonic() + RETRY_AFTER
            return
        if self._failing:
            self._failing = False
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
