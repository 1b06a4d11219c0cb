"""Limits in the Redis result store: each step one Lua script on one key, timed by Redis's own
clock (``TIME``), so workers on different machines agree on it.

Keys (under the store's prefix): ``<prefix>:unique:<key>`` (the owner's task id, with a
PEXPIRE of ``unique_for``), ``<prefix>:rate:<key>`` (the next free start, epoch seconds),
``<prefix>:rates`` (a hash of rate overrides by task), ``<prefix>:slots:<key>`` (a sorted set
of holders scored by the millisecond their slot expires).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis.asyncio as aioredis

from hubbub._redis_scripts import eval_each
from hubbub.limits.rate import Reservation
from hubbub.limits.store import LimitStore, Slot

_NOW_MS = ("local t = redis.call('TIME')\n"
           "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n")

# KEYS: the unique key. ARGV: owner, ttl ms. Returns the owner now.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return ARGV[1] end
return redis.call('GET', KEYS[1])
"""
# KEYS: the unique key. ARGV: owner.
_UNCLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: the rate key. ARGV: interval s, horizon s, lead s. The rule of
# hubbub.limits.rate.reserve.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval, horizon, lead = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '')
local start = now + lead
if tat and tat > start then start = tat end
if start - now > horizon then return {0, string.format('%.6f', start - horizon)} end
local nxt = start + interval
redis.call('SET', KEYS[1], string.format('%.6f', nxt), 'PX',
           math.ceil((nxt - now) * 1000) + 1000)
return {1, string.format('%.6f', start)}
"""
# KEYS: the slots. ARGV: holder, limit, ttl ms.
_ACQUIRE = _NOW_MS + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
# KEYS: the slots. ARGV: holder, ttl ms. An expired slot is not revived.
_RENEW = _NOW_MS + """
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '')
if not expiry or expiry <= now then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisLimits(LimitStore):
    """:class:`LimitStore` on the result store's Redis connection.

    Args:
        client: the connected client (a callable: the store connects later).
        prefix: the store's key prefix.
        translate: a context manager turning driver errors into hubbub's.
        cluster: the client is a Redis Cluster's (no scripts in a pipeline).
    """

    def __init__(self, client: Callable[[], aioredis.Redis], prefix: str,
                 translate: Callable[[], contextlib.AbstractContextManager[None]], *,
                 cluster: bool = False) -> None:
        self._client = client
        self._cluster = cluster
        self._prefix = prefix
        self._translate = translate
        self._scripts: dict[str, Any] = {}

    def _key(self, kind: str, key: str) -> bytes:
        return f"{self._prefix}:{kind}:".encode() + key.encode("utf-8", "surrogatepass")

    @contextlib.contextmanager
    def _io(self) -> Iterator[aioredis.Redis]:
        with self._translate():
            yield self._client()

    def _script(self, client: aioredis.Redis, source: str) -> Any:
        script = self._scripts.get(source)
        if script is None or script.registered_client is not client:
            script = self._scripts[source] = client.register_script(source)
        return script

    async def claim_uniques(self, claims: Sequence[tuple[str, str, float]]) -> list[str]:
        holders = await self._pipelined(_CLAIM, [(self._key("unique", key), [owner, _ms(ttl)])
                                                 for key, owner, ttl in claims])
        return [_text(held) for held in holders]

    async def release_unique(self, keys: Sequence[tuple[str, str]]) -> None:
        if not keys:
            return
        await self._pipelined(_UNCLAIM, [(self._key("unique", key), [owner])
                                         for key, owner in keys])

    async def reserve(self, key: str, *, interval: float, horizon: float,
                      lead: float = 0.0) -> Reservation:
        with self._io() as client:
            granted, at = await self._script(client, _RESERVE)(
                keys=[self._key("rate", key)], args=[repr(interval), repr(horizon), repr(lead)])
        return Reservation(bool(int(granted)), float(at))

    @property
    def _rates_key(self) -> str:
        return f"{self._prefix}:rates"

    async def set_rate(self, task: str, rate: str | None) -> None:
        with self._io() as client:
            if rate is None:
                await client.hdel(self._rates_key, task)
            else:
                await client.hset(self._rates_key, task, rate)

    async def rates(self) -> dict[str, str]:
        with self._io() as client:
            found: dict[Any, Any] = await client.hgetall(self._rates_key)
        return {_text(k): _text(v) for k, v in found.items()}

    async def acquire_slot(self, key: str, holder: str, *, limit: int, ttl: float) -> bool:
        with self._io() as client:
            took = await self._script(client, _ACQUIRE)(keys=[self._key("slots", key)],
                                                       args=[holder, limit, _ms(ttl)])
        return bool(int(took))

    async def renew_slots(self, slots: Sequence[Slot], *, ttl: float) -> None:
        await self._pipelined(_RENEW, [(self._key("slots", key), [holder, _ms(ttl)])
                                       for key, holder in slots])

    async def release_slots(self, slots: Sequence[Slot]) -> None:
        if not slots:
            return
        with self._io() as client:
            pipe = client.pipeline(transaction=False)
            for key, holder in slots:
                pipe.zrem(self._key("slots", key), holder)
            await pipe.execute()

    async def _pipelined(self, source: str, calls: list[tuple[bytes, list[Any]]]
                         ) -> list[Any]:
        """Run ``source`` once per (key, args), in order, in one round trip (on a cluster,
        the calls on one key in order, other keys' concurrently); the replies."""
        if not calls:
            return []
        with self._io() as client:
            return await eval_each(client, source, [(1, key, *args) for key, args in calls],
                                   cluster=self._cluster)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
