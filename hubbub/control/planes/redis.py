"""The plane on Redis: one stream per channel, ``<prefix>:plane:<channel>``.

Publishing is one ``XADD ... MAXLEN ~ maxlen`` per message, pipelined in one round trip (the
``~`` lets Redis trim whole nodes, so a channel keeps about ``maxlen`` entries, never much
more). A subscription remembers the id of the stream's newest entry when it opened and reads
on from there with ``XREAD BLOCK``: every reader sees every entry, and nothing is consumed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from hubbub._redis import RedisURL, translate
from hubbub.control.plane import MAXLEN, Plane, Subscription
from hubbub.errors import TransportError
from hubbub.transports._dead import retention_of

__all__ = ["RedisPlane"]


class RedisPlane(Plane):
    """Channels as capped Redis streams under the URL's prefix.

    Args:
        url: a ``redis://`` or ``rediss://`` URL, as the broker takes it.
        maxlen: entries a channel keeps (approximately, see the module docstring).

    Raises:
        ConfigurationError: the URL is malformed.
    """

    def __init__(self, url: str, maxlen: int = MAXLEN) -> None:
        super().__init__(maxlen)
        url, _ = retention_of(url, None, None)  # the broker's dead-letter options: not ours
        self.config = RedisURL.parse(url)
        timeout = self.config.options.get("socket_timeout")
        # One XREAD BLOCK stays well inside the socket timeout; a longer wait loops.
        self.max_block = 5.0 if timeout is None else max(0.1, timeout / 2)
        self._redis: aioredis.Redis | None = None

    def __repr__(self) -> str:
        return f"RedisPlane({str(self.config)!r})"

    def key(self, channel: str) -> str:
        return f"{self.config.prefix}:plane:{channel}"

    @property
    def client(self) -> aioredis.Redis:
        if self._redis is None:
            raise TransportError(f"redis plane {self.config} is not connected; call connect()")
        return self._redis

    async def connect(self) -> None:
        if self._redis is None:
            self._redis = self.config.client(name="hubbub-plane")
        with translate(self.config):
            await self._redis.ping()

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    async def publish(self, channel: str, messages: Sequence[bytes]) -> None:
        if not messages:
            return
        key = self.key(channel)
        with translate(self.config):
            async with self.client.pipeline(transaction=False) as pipe:
                for message in messages:
                    pipe.xadd(key, {b"m": message}, maxlen=self.maxlen, approximate=True)
                await pipe.execute()

    async def subscribe(self, channel: str) -> Subscription:
        key = self.key(channel)
        with translate(self.config):
            newest: Any = await self.client.xrevrange(key, count=1)
        # An empty or missing stream: everything that will be added is new to this reader.
        start = bytes(newest[0][0]) if newest else b"0-0"
        return _RedisSubscription(self, key, start)


class _RedisSubscription(Subscription):
    def __init__(self, plane: RedisPlane, key: str, last: bytes) -> None:
        self._plane = plane
        self._key = key
        self._last = last
        self._closed = False

    async def read(self, wait: float) -> list[bytes]:
        if self._closed:
            raise RuntimeError("read from a closed subscription")
        plane = self._plane
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait, 0.0)
        while True:
            block = min(max(0.0, deadline - loop.time()), plane.max_block)
            with translate(plane.config):
                # BLOCK 0 would wait forever: a read that may not wait does not block.
                reply: Any = await plane.client.xread(
                    {self._key: self._last},
                    block=max(1, round(block * 1000)) if block > 0 else None)
            _honour_cancel()
            out: list[bytes] = []
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    self._last = entry_id
                    body = fields.get(b"m")
                    if isinstance(body, bytes):
                        out.append(body)  # an entry of another shape is not ours: skipped
            if out or loop.time() >= deadline - 0.001:
                return out

    async def close(self) -> None:
        self._closed = True


def _honour_cancel() -> None:
    """Raise the cancellation of the current task if a read returned in spite of it.

    redis-py's asyncio client (8.1 here) can return from a blocked read as if its block had
    run out when the task was cancelled during it; the cancel is still counted on the task
    (``cancelling()``) but no ``CancelledError`` comes, so a reader that loops would read on.
    So a worker's stop could wait 15 s for its control reader after a burst of tasks.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
