"""The bridge on Redis: consume Celery's lists with hubbub's leases.

kombu keeps a queue as Redis lists (``<queue>``, and ``<queue>\\x06\\x16<3|6|9>`` for lower
priorities), producers ``LPUSH`` and Celery workers ``BRPOP``, remembering what they took in
the ``unacked`` hash for a visibility timeout. The bridge never pops and hopes: one Lua script
moves a message from Celery's list into the bridge's own lease (a hash of payloads and a
sorted set of deadlines under ``<prefix>-celery:{<queue>}:``), atomically. The worker renews
the deadline while the task runs; a lease that runs out (its worker died) puts the message
back at the head of the list it came from, for any consumer, Celery's included. Celery's own
``unacked`` structures are left alone, so a Celery worker never restores (reruns) what the
bridge is running, and the bridge never restores what a Celery worker is running.

Waiting is a ``BLMOVE`` from the main list into the bridge's landing list (which the next
claim drains first), so an idle bridge neither polls nor loses a message it woke for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hubbub._redis import RedisURL, translate
from hubbub.errors import MessageError
from hubbub.transports.base import DeadLetterRequest, Delivery, Outgoing, QueueStats

from ._common import CelerySource, Receipt
from .protocol import (
    PRIORITY_STEPS,
    CeleryRefused,
    build,
    due_at,
    priority_key,
    read_redis,
    redis_payload,
)

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from hubbub.hub import Hub
    from hubbub.message import Envelope

    from .results import CeleryResultWriter

# KEYS: leased, payloads, attempts, delayed, landing, seq, then the four priority lists.
# ARGV: now, lease deadline, limit. Tags are "<priority index>:<sha1 of payload>:<seq>";
# attempts are counted per payload digest, so a message restored and claimed again keeps
# its count (the broker-side delivery counter that caps poison).
_CLAIM = """
local now, deadline, limit = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
for _, tag in ipairs(expired) do
  local payload = redis.call('HGET', KEYS[2], tag)
  if payload then redis.call('RPUSH', KEYS[7 + tonumber(string.sub(tag, 1, 1))], payload) end
  redis.call('HDEL', KEYS[2], tag)
  redis.call('ZREM', KEYS[1], tag)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)
for _, payload in ipairs(due) do
  redis.call('RPUSH', KEYS[7], payload)
  redis.call('ZREM', KEYS[4], payload)
end
local out = {}
local lists = {KEYS[5], KEYS[7], KEYS[8], KEYS[9], KEYS[10]}
local index = {0, 0, 1, 2, 3}
for j, key in ipairs(lists) do
  while #out < 3 * limit do
    local payload = redis.call('RPOP', key)
    if not payload then break end
    local digest = redis.sha1hex(payload)
    local tag = index[j] .. ':' .. digest .. ':' .. redis.call('INCR', KEYS[6])
    redis.call('HSET', KEYS[2], tag, payload)
    redis.call('ZADD', KEYS[1], deadline, tag)
    local n = redis.call('HINCRBY', KEYS[3], digest, 1)
    table.insert(out, tag); table.insert(out, payload); table.insert(out, n)
  end
end
return out
"""

# KEYS: leased, payloads, attempts. ARGV: tags. Only a lease still held is settled.
_ACK = """
for _, tag in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[1], tag) == 1 then
    redis.call('HDEL', KEYS[2], tag)
    redis.call('HDEL', KEYS[3], string.match(tag, '^%d:(%x+):'))
  end
end
"""

# KEYS: leased, payloads, attempts, delayed, then the four priority lists.
# ARGV: pairs of (tag, due at; 0 = now). Not an attempt: the count goes back down.
_RELEASE = """
for i = 1, #ARGV, 2 do
  local tag, at = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('ZREM', KEYS[1], tag) == 1 then
    local payload = redis.call('HGET', KEYS[2], tag)
    redis.call('HDEL', KEYS[2], tag)
    redis.call('HINCRBY', KEYS[3], string.match(tag, '^%d:(%x+):'), -1)
    if payload then
      if at > 0 then redis.call('ZADD', KEYS[4], at, payload)
      else redis.call('RPUSH', KEYS[5 + tonumber(string.sub(tag, 1, 1))], payload) end
    end
  end
end
"""

# KEYS: leased. ARGV: deadline, tags. Returns the tags whose lease was lost.
_EXTEND = """
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
  else table.insert(lost, ARGV[i]) end
end
return lost
"""

# KEYS: leased, payloads, attempts, dead. ARGV: how many dead letters to keep, then pairs
# of (tag, record).
_DEAD = """
for i = 2, #ARGV, 2 do
  local tag = ARGV[i]
  if redis.call('ZREM', KEYS[1], tag) == 1 then
    redis.call('HDEL', KEYS[2], tag)
    redis.call('HDEL', KEYS[3], string.match(tag, '^%d:(%x+):'))
    redis.call('RPUSH', KEYS[4], ARGV[i + 1])
  end
end
redis.call('LTRIM', KEYS[4], -tonumber(ARGV[1]), -1)
"""


@dataclass(frozen=True, slots=True)
class _Keys:
    leased: str
    payloads: str
    attempts: str
    delayed: str
    landing: str
    seq: str
    dead: str
    lists: tuple[str, ...]

    @classmethod
    def of(cls, prefix: str, queue: str) -> _Keys:
        base = f"{prefix}-celery:{{{queue}}}:"
        return cls(base + "leased", base + "payloads", base + "attempts", base + "delayed",
                   base + "landing", base + "seq", base + "dead",
                   tuple(priority_key(queue, p) for p in PRIORITY_STEPS))


class RedisCelerySource(CelerySource):
    """Celery's queues on a Redis broker, consumed with leases.

    Args:
        hub: the app whose tasks run.
        url: Celery's broker URL (``redis://host:port/db``); ``?prefix=`` names the bridge's
            own keys (default ``hubbub``).
        queues: Celery queue names.
        results: where Celery callers read results, or None.
    """

    def __init__(self, hub: Hub, url: str, queues: tuple[str, ...],
                 results: CeleryResultWriter | None = None) -> None:
        super().__init__(hub, queues, results)
        self.url = RedisURL.parse(url)
        self._keys = {q: _Keys.of(self.url.prefix, q) for q in queues}
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RedisCelerySource({self.url}, {list(self.queues)})"

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("the Celery bridge is not connected")
        return self._client

    async def connect(self) -> None:
        self._client = self.url.client(name="hubbub-celery-bridge")
        with translate(self.url):
            await self._client.ping()
        for name, text in (("claim", _CLAIM), ("ack", _ACK), ("release", _RELEASE),
                           ("extend", _EXTEND), ("dead", _DEAD)):
            self._scripts[name] = self._client.register_script(text)
        if self.results is not None:
            await self.results.connect()

    async def close(self) -> None:
        if self.results is not None:
            await self.results.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        with translate(self.url):
            return await self._scripts[name](keys=list(keys), args=list(args))

    # -- fetching ---------------------------------------------------------------------------

    async def fetch(self, queues: Sequence[str], *, limit: int, lease: float,
                    wait: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while True:
            out: list[Delivery] = []
            for queue in queues:
                if len(out) < limit:
                    out += await self._claim(queue, limit - len(out), lease)
            remaining = until - loop.time()
            if out or remaining <= 0.01:
                return out
            keys = self._keys[queues[0]]
            with translate(self.url):
                # Blocks on the default-priority list only; the others are looked at on
                # every claim, at most ``wait`` apart.
                # Redis takes float seconds here; redis-py's hint says int.
                await self.client.blmove(keys.lists[0], keys.landing,
                                         round(remaining, 3),  # type: ignore[arg-type]
                                         "RIGHT", "LEFT")

    async def _claim(self, queue: str, limit: int, lease: float) -> list[Delivery]:
        keys = self._keys[queue]
        now = time.time()
        flat = await self._run("claim", [keys.leased, keys.payloads, keys.attempts,
                                         keys.delayed, keys.landing, keys.seq, *keys.lists],
                               [repr(now), repr(now + lease), limit])
        out: list[Delivery] = []
        later: list[tuple[str, float]] = []
        for i in range(0, len(flat), 3):
            tag, payload, attempts = flat[i].decode(), bytes(flat[i + 1]), int(flat[i + 2])
            try:
                message: Any = read_redis(payload, self.max_size)
            except CeleryRefused as exc:
                message = exc
            eta = None if isinstance(message, CeleryRefused) else due_at(message)
            if eta is not None and eta > now + 0.01:
                later.append((tag, eta))  # Celery's eta: held in Redis, not in memory
                continue
            ident = message.id if not isinstance(message, CeleryRefused) else message.task_id
            out.append(Delivery(queue, payload, ident or f"celery-{tag}", attempts,
                                receipt=Receipt(self, tag, message), lease_until=now + lease))
        if later:
            await self._run("release", [keys.leased, keys.payloads, keys.attempts,
                                        keys.delayed, *keys.lists],
                            [x for tag, at in later for x in (tag, repr(at))])
        return out

    # -- settling ---------------------------------------------------------------------------

    def _by_queue(self, deliveries: Sequence[Delivery]) -> dict[str, list[str]]:
        tags: dict[str, list[str]] = {}
        for d in deliveries:
            tags.setdefault(d.queue, []).append(d.receipt.handle)
        return tags

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self.tell_expired(deliveries)
        for queue, tags in self._by_queue(deliveries).items():
            keys = self._keys[queue]
            await self._run("ack", [keys.leased, keys.payloads, keys.attempts], tags)

    async def release(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        at = repr(time.time() + delay) if delay > 0 else "0"
        for queue, tags in self._by_queue(deliveries).items():
            keys = self._keys[queue]
            await self._run("release", [keys.leased, keys.payloads, keys.attempts,
                                        keys.delayed, *keys.lists],
                            [x for tag in tags for x in (tag, at)])

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        until = time.time() + lease
        lost: list[Delivery] = []
        for queue, tags in self._by_queue(deliveries).items():
            gone = {t.decode() for t in await self._run(
                "extend", [self._keys[queue].leased], [repr(until), *tags])}
            lost += [d for d in deliveries if d.queue == queue and d.receipt.handle in gone]
        for d in deliveries:
            if d not in lost:
                d.lease_until = until
        return lost

    async def dead_letter(self, requests: Sequence[DeadLetterRequest]) -> None:
        keep = self.hub.settings.limits.max_dead_letters
        by_queue: dict[str, list[DeadLetterRequest]] = {}
        for r in requests:
            by_queue.setdefault(r.delivery.queue, []).append(r)
        for queue, group in by_queue.items():
            keys = self._keys[queue]
            pairs = [x for r in group for x in (
                r.delivery.receipt.handle,
                self.dead_record(r, r.delivery.body.decode("utf-8", "replace")))]
            await self._run("dead", [keys.leased, keys.payloads, keys.attempts, keys.dead],
                            [keep, *pairs])
        await self.tell_celery(requests)

    async def publish(self, items: Sequence[Outgoing]) -> None:
        now = time.time()
        with translate(self.url):
            async with self.client.pipeline(transaction=False) as pipe:
                for item in items:
                    try:
                        payload = redis_payload(self.retried(item), item.queue)
                    except MessageError as exc:
                        raise MessageError(f"retry of {item.id} cannot go back to Celery's "
                                           f"queue {item.queue!r}: {exc}") from exc
                    keys = self._keys[item.queue]
                    if item.eta is not None and item.eta > now:
                        pipe.zadd(keys.delayed, {payload: item.eta})
                    else:
                        pipe.lpush(keys.lists[0], payload)
                await pipe.execute()

    async def send(self, env: Envelope) -> None:
        payload = redis_payload(build(env), env.queue)
        with translate(self.url):
            await self.client.lpush(priority_key(env.queue, 0), payload)

    async def stats(self, queues: Sequence[str]) -> list[QueueStats]:
        out = []
        for queue in queues:
            keys = self._keys[queue]
            with translate(self.url):
                async with self.client.pipeline(transaction=False) as pipe:
                    for key in (*keys.lists, keys.landing):
                        pipe.llen(key)
                    pipe.zcard(keys.delayed)
                    pipe.zcard(keys.leased)
                    pipe.llen(keys.dead)
                    counts = await pipe.execute()
            out.append(QueueStats(queue, ready=sum(counts[:5]), delayed=counts[5],
                                  leased=counts[6], dead=counts[7]))
        return out

