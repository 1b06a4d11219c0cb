"""Schedule state in Redis, next to the results: the same URL and ``prefix``.

Keys (one Redis Cluster hash tag, so every script touches one slot):

| key | type | holds |
|---|---|---|
| ``{<prefix>:beat}:lease`` | string with expiry | the leader's owner id; Redis expires it |
| ``{<prefix>:beat}:slots`` | hash | entry -> last claimed slot (epoch seconds, as text) |
| ``{<prefix>:beat}:claims`` | hash | entry -> ``"<published 0/1>|<claimed at>|<owner>"`` |

The lease is taken with ``SET NX PX`` and extended by a Lua compare-and-extend, so only its
holder can extend or drop it; its expiry runs on Redis's clock. A claim is one Lua script that
checks the lease holder and compares the slot before writing it.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import redis.asyncio as aioredis

from hubbub._redis import RedisURL, translate
from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.errors import TransportError
from hubbub.schedule.store import Lease, ScheduleStore, SlotState

# KEYS: lease. ARGV: owner, ttl ms.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lease. ARGV: owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lease, slots, claims. ARGV: owner, entry, slot, now.
_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local last = redis.call('HGET', KEYS[2], ARGV[2])
if last and tonumber(last) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], '0|' .. ARGV[4] .. '|' .. ARGV[1])
return 1
"""

# KEYS: slots, claims. ARGV: entry, slot.
_MARK = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
local claim = redis.call('HGET', KEYS[2], ARGV[1])
if claim then redis.call('HSET', KEYS[2], ARGV[1], '1' .. string.sub(claim, 2)) end
return 1
"""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisScheduleStore(ScheduleStore):
    """The lease as an expiring key; the claims in two hashes, changed by Lua scripts.

    Args:
        url: the hub's result store URL, ``redis://host:port/db?prefix=...``.
        clock: the time recorded with each claim (the lease expires on Redis's clock).

    Raises:
        ConfigurationError: the URL is malformed or has an unknown option.
    """

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = RedisURL.parse(url)
        self.clock = clock
        tag = f"{{{self.config.prefix}:beat}}"
        self.lease_key, self.slots_key, self.claims_key = (
            f"{tag}:lease", f"{tag}:slots", f"{tag}:claims")
        self.client_name = f"hubbub-beat-{uuid.uuid4().hex[:8]}"
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RedisScheduleStore({str(self.config)!r})"

    @property
    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise TransportError(f"schedule store {self.config} is not connected; call connect()")
        return self._redis

    async def connect(self) -> None:
        if self._redis is None:
            self._redis = self.config.client(name=self.client_name)
            self._scripts = {name: self._redis.register_script(text) for name, text in (
                ("extend", _EXTEND), ("release", _RELEASE), ("claim", _CLAIM), ("mark", _MARK))}
        with translate(self.config):
            await self._client.ping()

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    async def acquire(self, owner: str, ttl: float) -> bool:
        with translate(self.config):
            if await self._client.set(self.lease_key, owner, nx=True, px=_ms(ttl)):
                return True
            return bool(await self._scripts["extend"](keys=[self.lease_key],
                                                      args=[owner, _ms(ttl)]))

    async def renew(self, owner: str, ttl: float) -> bool:
        with translate(self.config):
            return bool(await self._scripts["extend"](keys=[self.lease_key],
                                                      args=[owner, _ms(ttl)]))

    async def release(self, owner: str) -> None:
        with translate(self.config):
            await self._scripts["release"](keys=[self.lease_key], args=[owner])

    async def leader(self) -> Lease | None:
        pipe = self._client.pipeline(transaction=True)
        pipe.get(self.lease_key)
        pipe.pttl(self.lease_key)
        with translate(self.config):
            owner, pttl = await pipe.execute()
        if owner is None or pttl is None or pttl < 0:
            return None
        return Lease(owner.decode(), self.clock.time() + pttl / 1000)

    async def claim_slot(self, entry: str, slot: float, owner: str) -> bool:
        keys = [self.lease_key, self.slots_key, self.claims_key]
        with translate(self.config):
            return bool(await self._scripts["claim"](
                keys=keys, args=[owner, entry, repr(slot), repr(self.clock.time())]))

    async def mark_published(self, entry: str, slot: float) -> None:
        with translate(self.config):
            await self._scripts["mark"](keys=[self.slots_key, self.claims_key],
                                        args=[entry, repr(slot)])

    async def last_slots(self) -> dict[str, SlotState]:
        pipe = self._client.pipeline(transaction=True)
        pipe.hgetall(self.slots_key)
        pipe.hgetall(self.claims_key)
        with translate(self.config):
            slots, claims = await pipe.execute()
        found: dict[str, SlotState] = {}
        for raw_entry, raw_slot in slots.items():
            published, claimed_at, owner = (claims.get(raw_entry) or b"1|0|?").decode().split(
                "|", 2)
            found[raw_entry.decode()] = SlotState(float(raw_slot), published == "1", owner,
                                                  float(claimed_at))
        return found
