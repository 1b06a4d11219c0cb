"""Waiting for results in Redis (``RedisResults.wait``'s part, kept apart): one pub/sub
connection per backend, woken by the notice the store script publishes on a channel named
like the record's key."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

log = logging.getLogger("hubbub.results.redis")


class Listener:
    """One pub/sub connection shared by every ``wait`` of a backend; wakes them by channel.

    Channels are subscribed while someone waits on them. A waiter reads the record only
    after Redis confirmed its subscription, so a result stored in between is never missed.
    When the connection drops, redis-py reconnects and subscribes again; the confirmation
    of an already confirmed channel wakes its waiters, who read the record again.
    """

    def __init__(self, client: aioredis.Redis, confirm_within: float) -> None:
        self._client = client
        self._confirm_within = confirm_within
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[bytes, set[asyncio.Event]] = {}
        self._confirmed: dict[bytes, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()  # orders SUBSCRIBE/UNSUBSCRIBE with the state kept here

    @contextlib.asynccontextmanager
    async def watch(self, channel: bytes) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        async with self._lock:
            waiters = self._waiters.setdefault(channel, set())
            waiters.add(event)
            if channel not in self._confirmed:
                self._confirmed[channel] = asyncio.get_running_loop().create_future()
                try:
                    await self._subscribe(channel)
                except BaseException:
                    self._forget(channel, event)
                    raise
            confirmed = self._confirmed[channel]
        try:
            with contextlib.suppress(TimeoutError):  # unconfirmed: the waiter re-reads anyway
                await asyncio.wait_for(asyncio.shield(confirmed), self._confirm_within)
            yield event
        finally:
            async with self._lock:
                if self._forget(channel, event) and self._pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await self._pubsub.unsubscribe(channel)

    def _forget(self, channel: bytes, event: asyncio.Event) -> bool:
        """Drop one waiter; True when it was the channel's last."""
        waiters = self._waiters.get(channel, set())
        waiters.discard(event)
        if waiters:
            return False
        self._waiters.pop(channel, None)
        self._confirmed.pop(channel, None)
        return True

    async def _subscribe(self, channel: bytes) -> None:
        if self._pubsub is None:
            self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(channel)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(self._pubsub), name="redis-results")

    async def _read(self, pubsub: PubSub) -> None:
        delay = 0.05
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
                delay = 0.05
            except (RedisError, OSError) as exc:
                log.debug("result notices interrupted (%s); reconnecting", type(exc).__name__)
                self._wake_all()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if message is None:
                continue
            channel = message["channel"]
            if message["type"] == "subscribe":
                confirmed = self._confirmed.get(channel)
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)
                    continue
            if message["type"] in ("message", "subscribe"):
                for event in self._waiters.get(channel, ()):
                    event.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
