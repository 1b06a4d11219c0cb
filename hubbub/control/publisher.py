"""``EventPublisher``: a worker's events onto the plane's ``events`` channel, in batches.

Capturing an event is a ``deque.append`` on the worker's loop (bounded: a full buffer drops
the oldest and counts it); encoding and the plane write happen on a background task: one
write every ``every`` seconds carrying everything buffered, as messages of ``batch`` events,
and sooner only when the buffer is half full. A busy worker thus pays one plane round trip
(one transaction on SQLite) per ``every``, not one per ``batch`` events. Nothing here
waits for the plane on the way of a task: an outage is logged once, what was buffered
meanwhile is dropped and counted, and publishing resumes when the plane is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque

from hubbub._redact import redact
from hubbub.control.plane import Plane
from hubbub.control.wire import Row, encode_batch
from hubbub.events import Event, EventBus, TaskReceived, TaskSent, TaskStarted

__all__ = ["CHANNEL", "EventPublisher"]

log = logging.getLogger("hubbub.events")
_now = time.time

CHANNEL = "events"
EVERY = 0.2  # seconds between plane writes
BATCH = 1000  # events per plane message
CAPACITY = 20_000  # events buffered at most (a write as soon as half wait); past it, the
# oldest are dropped
PLANE_KEEPS = 200  # messages (batches of up to BATCH) the events channel keeps
RETRY_FIRST, RETRY_MAX = 0.5, 10.0  # seconds between tries while the plane is down
CLOSE_WITHIN = 2.0  # seconds a stopping worker waits to publish what is left
# Events the publisher does not take from the bus: task-sent is published by the producer
# (``SentEvents``); received and started come from the worker loop as rows (``record``).
_RECORDED_ELSEWHERE: frozenset[type] = frozenset({TaskSent, TaskReceived, TaskStarted})


class EventPublisher:
    """Publishes what ``bus`` emits on ``plane`` until closed.

    Args:
        bus: the hub's event bus (subscribed by :meth:`start`, left by :meth:`close`).
        plane: an unconnected plane, owned from now on (connected and closed here).
        every: seconds between writes (sooner when half of ``capacity`` waits).
        batch: events per message (a write carries as many messages as are buffered).
        capacity: events buffered at most.
    """

    def __init__(self, bus: EventBus, plane: Plane, *, every: float = EVERY,
                 batch: int = BATCH, capacity: int = CAPACITY) -> None:
        self.bus = bus
        self.plane = plane
        self.every = every
        self.batch = min(batch, capacity)
        self.soon = max(1, capacity // 2)  # buffered events that wake the writer early
        self.buffer: deque[tuple[float, Event] | Row] = deque(maxlen=capacity)
        self.dropped = 0  # events lost: the buffer was full, or the plane was down
        self.published = 0
        self._full = asyncio.Event()
        self._connected = False
        self._failing = False
        self._retry_at = 0.0  # monotonic time of the next try while failing
        self._pause = RETRY_FIRST
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.get_ident()

    def capture(self, event: Event) -> None:
        """The bus subscriber: buffer ``event`` with the time it happened.

        Called for every event of the worker, on its loop: a type check, one length check
        and an append. ``task-sent`` goes out with the send itself (``SentEvents``), and the
        worker loop hands received and started over as rows (:meth:`record`).
        """
        if type(event) in _RECORDED_ELSEWHERE:
            return
        buffer = self.buffer
        if len(buffer) >= self.soon:  # rare: the buffer is half full, or full
            self._half_full()
        buffer.append((_now(), event))

    def record(self, row: Row) -> None:
        """Buffer an event given in its array form (``wire.received_row``...): the worker
        loop's per-task steps, which cost no event object this way."""
        buffer = self.buffer
        if len(buffer) >= self.soon:  # rare: the buffer is half full, or full
            self._half_full()
        buffer.append(row)

    def _half_full(self) -> None:
        """Count the event a full buffer is about to drop, and wake the writer."""
        if len(self.buffer) == self.buffer.maxlen:
            self.dropped += 1
        if threading.get_ident() == self._thread:
            self._full.set()
        elif self._loop is not None:  # an event emitted on another thread
            self._loop.call_soon_threadsafe(self._full.set)

    def start(self) -> None:
        """Subscribe to the bus and start publishing (on the running loop)."""
        self._loop, self._thread = asyncio.get_running_loop(), threading.get_ident()
        self.bus.subscribe(self.capture)
        self._task = asyncio.create_task(self._publish_forever())

    async def _publish_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.every)
            self._full.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything buffered now, as messages of ``batch`` events in one plane
        write; on a failure, drop it and say so once."""
        if self._failing and time.monotonic() < self._retry_at:
            self.dropped += len(self.buffer)  # the plane is down: try again later
            self.buffer.clear()
            return
        if self.buffer:
            # One write: what the loop appends while it waits goes with the next one.
            taken = list(self.buffer)
            self.buffer.clear()
            try:
                if not self._connected:
                    await self.plane.connect()
                    self._connected = True
                await self.plane.publish(CHANNEL, [
                    encode_batch(taken[start:start + self.batch])
                    for start in range(0, len(taken), self.batch)])
            except Exception as exc:  # an outage (or a bug): the worker must not notice
                self.dropped += len(taken) + len(self.buffer)
                self.buffer.clear()
                self._retry_at = time.monotonic() + self._pause
                self._pause = min(self._pause * 2, RETRY_MAX)
                if not self._failing:
                    self._failing = True
                    log.warning("events cannot be published (%s); dropping them until the "
                                "plane is back", redact(str(exc)) or type(exc).__name__)
                return
            self.published += len(taken)
            if self._failing:
                self._failing, self._pause = False, RETRY_FIRST
                log.warning("events are published again (%d dropped so far)", self.dropped)

    async def close(self) -> None:
        """Stop capturing, publish what is left (bounded), close the plane."""
        self.bus.unsubscribe(self.capture)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), CLOSE_WITHIN)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.plane.close(), CLOSE_WITHIN)
