"""The plane: bounded broadcast channels beside the data path, for events and control.

A :class:`Plane` carries opaque messages (bytes; the callers encode and sign them) on named
channels (``events``, ``control``, ``replies``). A :class:`Subscription` sees what is
published on its channel after it was opened, in order, by everyone subscribed: it is a
broadcast, not a queue. Every channel keeps at most ``maxlen`` messages for readers that
lag, then drops the oldest; a reader that lags further loses them (the plane is for
watching and steering, never for work). Nothing is kept for a channel nobody reads longer
than that bound, and a plane nobody subscribes to costs its publishers one write per batch.

Each broker carries it with what it offers (Redis streams, an AMQP fanout exchange, a SQLite
table; Beanstalkd through the result store); ``memory://`` keeps it in process for tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["CHANNELS", "MAXLEN", "MemoryPlane", "Plane", "Subscription"]

CHANNELS = ("events", "control", "replies")
MAXLEN = 10_000  # messages a channel keeps for lagging readers


class Subscription(ABC):
    """What one reader sees of one channel, from the moment it was opened."""

    @abstractmethod
    async def read(self, wait: float) -> list[bytes]:
        """The messages published since the last read, oldest first; waits up to ``wait``
        seconds for the first one, and returns ``[]`` when none came."""

    async def close(self) -> None:
        """Stop reading; further reads are an error."""
        return None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


class Plane(ABC):
    """Broadcast channels over one broker (or store). One per event loop, like a transport.

    Raises (every method):
        TransportUnavailable: the server cannot be reached.
    """

    def __init__(self, maxlen: int = MAXLEN) -> None:
        self.maxlen = maxlen

    async def connect(self) -> None:
        """Open connections; idempotent."""
        return None

    async def close(self) -> None:
        """Close connections; idempotent."""
        return None

    @abstractmethod
    async def publish(self, channel: str, messages: Sequence[bytes]) -> None:
        """Send ``messages`` to every current subscriber of ``channel``, in one round trip."""

    @abstractmethod
    async def subscribe(self, channel: str) -> Subscription:
        """A subscription that sees what is published on ``channel`` from now on."""

    async def __aenter__(self) -> Plane:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


# -- in process (memory://) ------------------------------------------------------------------

POLL = 0.005  # seconds between looks of a waiting memory reader


@dataclass
class _Channel:
    lock: threading.Lock = field(default_factory=threading.Lock)
    messages: deque[tuple[int, bytes]] = field(default_factory=deque)
    next_seq: int = 0


_PLANES: dict[str, dict[str, _Channel]] = {}
_PLANES_LOCK = threading.Lock()


class MemoryPlane(Plane):
    """Channels in this process: planes opened with the same name share them, from any
    thread or event loop (as ``memory://`` transports share queues)."""

    def __init__(self, name: str = "", maxlen: int = MAXLEN) -> None:
        super().__init__(maxlen)
        with _PLANES_LOCK:
            self._channels = _PLANES.setdefault(name, {})

    def _channel(self, name: str) -> _Channel:
        with _PLANES_LOCK:
            return self._channels.setdefault(name, _Channel())

    async def publish(self, channel: str, messages: Sequence[bytes]) -> None:
        ch = self._channel(channel)
        with ch.lock:
            for message in messages:
                ch.messages.append((ch.next_seq, bytes(message)))
                ch.next_seq += 1
            while len(ch.messages) > self.maxlen:
                ch.messages.popleft()

    async def subscribe(self, channel: str) -> Subscription:
        ch = self._channel(channel)
        with ch.lock:
            start = ch.next_seq
        return _MemorySubscription(ch, start)


class _MemorySubscription(Subscription):
    def __init__(self, channel: _Channel, start: int) -> None:
        self._channel = channel
        self._next = start
        self._closed = False

    async def read(self, wait: float) -> list[bytes]:
        if self._closed:
            raise RuntimeError("read from a closed subscription")
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            ch = self._channel
            with ch.lock:
                if ch.next_seq > self._next:
                    out = [body for seq, body in ch.messages if seq >= self._next]
                    self._next = ch.next_seq
                    return out
            if time.monotonic() >= deadline:
                return []
            await asyncio.sleep(POLL)

    async def close(self) -> None:
        self._closed = True
