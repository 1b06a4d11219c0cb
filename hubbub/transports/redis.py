"""Redis broker: ``redis://[:password@]host:port/db?prefix=hubbub`` (``rediss://`` for TLS).

One stream per queue and priority level, each with one consumer group; every transport
instance is a consumer of its own. The layout and the lease model are in ``docs/redis.md``.

Invariants the scripts keep, all inside one queue's hash slot:

- every stream entry at or before the group's cursor is pending, and every pending entry has
  a lease: a member ``"<priority>/<entry id>"`` in the ``leases`` zset (score: deadline)
  and in the ``held`` hash (value: attempts so far, which doubles as the handout's token:
  each handout of one entry counts one more, so a stale holder's token never matches);
- ack, release and dead-letter XACK *and* XDEL, so a stream holds only live messages;
- a release re-adds the body as a new entry carrying the attempts so far, so a release
  never counts as an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import KeyT, StreamIdT

from hubbub._redact import redact
from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.errors import ConfigurationError, TransportError, TransportUnavailable
from hubbub.transports.base import (
    Capabilities,
    DeadLetter,
    DeadLetterRequest,
    Delivery,
    Outgoing,
    QueueStats,
    Transport,
)

GROUP = "hubbub"
LEVELS = 10  # priorities 0..9, one stream each
_SCAN = 256  # entries one script call looks at, so that no call blocks Redis for long
_CHUNK = 1000  # messages per script call when publishing or acking many
_SSL_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                "ssl_check_hostname")
_OPTIONS = ("prefix", "db", "socket_timeout", "socket_connect_timeout", "max_connections",
            *_SSL_OPTIONS)


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A parsed ``redis://`` or ``rediss://`` URL. ``str()`` never shows the password.

    Attributes:
        host, port, db, username: where to connect.
        password: kept out of ``repr``; shown nowhere.
        prefix: first part of every key name (default ``hubbub``).
        tls: True for ``rediss://``.
        options: keyword arguments for ``redis.asyncio.Redis`` (timeouts, TLS files).
    """

    host: str
    port: int
    db: int
    prefix: str
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: dict[str, Any] = field(default_factory=dict)
    redacted: str = ""

    @classmethod
    def parse(cls, url: str) -> RedisURL:
        """Read ``url``.

        Raises:
            ConfigurationError: not a Redis URL, a bad number, or an unknown option
                (with the closest known one as a suggestion).
        """
        scheme, _, rest = url.partition("://")
        userinfo, at, address = rest.rpartition("@")
        # Shown in errors: nothing of what stands before the last '@', which may be secret.
        shown = f"{scheme}://{'***@' if at else ''}{address}"
        if scheme not in ("redis", "rediss"):
            raise ConfigurationError(f"not a redis URL: {shown}")
        if any(c in userinfo for c in "/?#"):
            raise ConfigurationError(f"malformed redis URL {shown}: percent-encode '/', '?', "
                                     "'#' and '@' in the user name and password")
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        for key in query:
            if key not in _OPTIONS:
                close = difflib.get_close_matches(key, _OPTIONS, n=1)
                tip = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(_OPTIONS)}"
                raise ConfigurationError(f"unknown redis URL option {key!r} in {shown}; {tip}")
        options: dict[str, Any] = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0}
        try:
            port = parts.port or 6379
            db = int(query.pop("db", None) or parts.path.strip("/") or 0)
            for key in ("socket_timeout", "socket_connect_timeout"):
                if key in query:
                    options[key] = float(query.pop(key))
            if "max_connections" in query:
                options["max_connections"] = int(query.pop("max_connections"))
        except ValueError as exc:
            raise ConfigurationError(f"bad number in redis URL {shown}: {exc}") from None
        tls = parts.scheme == "rediss"
        for key in _SSL_OPTIONS:
            if key not in query:
                continue
            if not tls:
                raise ConfigurationError(f"{key} needs a rediss:// URL (TLS): {shown}")
            value = query.pop(key)
            if key == "ssl_check_hostname":
                options[key] = value.lower() in ("1", "true", "yes", "on")
            elif key == "ssl_cert_reqs" and value not in ("none", "optional", "required"):
                raise ConfigurationError(
                    f"ssl_cert_reqs must be none, optional or required, not {value!r}")
            else:
                options[key] = value
        prefix = query.pop("prefix", "hubbub") or "hubbub"
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        login = (parts.username or "") + (":***" if parts.password is not None else "")
        return cls(
            host=parts.hostname or "localhost", port=port, db=db, prefix=prefix, tls=tls,
            username=username, password=password, options=options,
            redacted=f"{scheme}://{login + '@' if at else ''}{address}",
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.redacted

    def client(self, *, name: str) -> aioredis.Redis:
        """A pooled asyncio client whose connections call themselves ``name`` (CLIENT SETNAME).

        Reconnects quickly once or twice; longer outages surface as errors, and the worker
        loop retries with backoff.
        """
        return aioredis.Redis(
            host=self.host, port=self.port, db=self.db, username=self.username,
            password=self.password, ssl=self.tls, client_name=name,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2),
            **self.options,
        )


@contextlib.contextmanager
def translate(
    url: RedisURL,
    unavailable: type[Exception] = TransportUnavailable,
    failed: type[Exception] = TransportError,
) -> Iterator[None]:
    """Turn driver errors into hubbub's, with the password scrubbed from the message."""
    try:
        yield
    except AuthenticationError as exc:  # a ConnectionError to redis-py, but retrying won't help
        _raise(url, failed, f"redis at {url.where} rejected the login: {exc}", exc)
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        verb = "timed out" if isinstance(exc, TimeoutError | RedisTimeoutError) else "refused"
        _raise(url, unavailable, f"redis at {url.where} {verb}: {exc}", exc)
    except RedisError as exc:
        _raise(url, failed, f"redis at {url.where} failed: {exc}", exc)


def _raise(url: RedisURL, kind: type[Exception], message: str, exc: Exception) -> NoReturn:
    if url.password:
        message = message.replace(url.password, "***")
    raise kind(redact(message)) from exc


# Lua. KEYS of every queue script, all sharing the queue's hash tag:
#   1..10 ready streams for priority 0..9, 11 leases (zset), 12 held (hash),
#   13 delayed (zset: entry id in 14 -> eta), 14 delayed bodies (stream),
#   15 wake (stream, MAXLEN 1: bumped when a delayed message is added), 16 dead (stream).
_LUA_COMMON = """
local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function entry(s, eid)
  local e = redis.call('XRANGE', s, eid, eid)[1]
  if e then return fields(e[2]) end
end
local function enqueue(g, p, id, body, a)
  local s = KEYS[p + 1]
  if redis.call('EXISTS', s) == 0 then redis.call('XGROUP', 'CREATE', s, g, '0', 'MKSTREAM') end
  if a and a > 0 then return redis.call('XADD', s, '*', 'id', id, 'body', body, 'a', a) end
  return redis.call('XADD', s, '*', 'id', id, 'body', body)
end
local function postpone(at, p, id, body, a)
  local did = redis.call('XADD', KEYS[14], '*', 'id', id, 'body', body, 'p', p, 'a', a)
  redis.call('ZADD', KEYS[13], at, did)
end
local function wake() redis.call('XADD', KEYS[15], 'MAXLEN', 1, '*', 'w', 1) end
local function owned(m, token) return redis.call('HGET', KEYS[12], m) == token end
local function drop(g, p, eid)
  local m = p .. '/' .. eid
  redis.call('XACK', KEYS[p + 1], g, eid)
  redis.call('XDEL', KEYS[p + 1], eid)
  redis.call('HDEL', KEYS[12], m)
  redis.call('ZREM', KEYS[11], m)
end
"""

# ARGV: group, then (priority, id, body, eta or '') per message.
_PUBLISH = _LUA_COMMON + """
local delayed = false
for i = 2, #ARGV, 4 do
  if ARGV[i + 3] == '' then enqueue(ARGV[1], tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], 0)
  else postpone(ARGV[i + 3], ARGV[i], ARGV[i + 1], ARGV[i + 2], 0); delayed = true end
end
if delayed then wake() end
return 1
"""

# ARGV: group, consumer, now, lease deadline, limit.
# Returns {rows} or, when nothing was claimed, {{}, cursors for XREAD, {next eta, next deadline}}.
_CLAIM = _LUA_COMMON + """
local g, c, now, deadline, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
for _, did in ipairs(redis.call('ZRANGEBYSCORE', KEYS[13], '-inf', now, 'LIMIT', 0, SCAN)) do
  local f = entry(KEYS[14], did)
  if f then enqueue(g, tonumber(f.p), f.id, f.body, tonumber(f.a)) end
  redis.call('XDEL', KEYS[14], did)
  redis.call('ZREM', KEYS[13], did)
end
local expired = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[11], '-inf', now, 'LIMIT', 0, SCAN)) do
  local p = tonumber(string.sub(m, 1, 1))
  expired[p] = expired[p] or {}
  table.insert(expired[p], string.sub(m, 3))
end
local out = {}
local function hand(p, eid, f, attempts)
  local m = p .. '/' .. eid
  redis.call('HSET', KEYS[12], m, attempts)
  redis.call('ZADD', KEYS[11], deadline, m)
  table.insert(out, {p, eid, f.id, f.body, attempts})
end
for p = LEVELS - 1, 0, -1 do
  local s = KEYS[p + 1]
  for _, eid in ipairs(expired[p] or {}) do
    if #out >= limit then break end
    local was = redis.call('XPENDING', s, g, eid, eid, 1)[1]
    local got = redis.call('XCLAIM', s, g, c, 0, eid)[1]
    if got and got[2] then
      local before = tonumber(redis.call('HGET', KEYS[12], p .. '/' .. eid)) or 0
      hand(p, eid, fields(got[2]), before + 1)
    else
      drop(g, p, eid)
    end
    if was and was[2] ~= c and #redis.call('XPENDING', s, g, '-', '+', 1, was[2]) == 0 then
      redis.call('XGROUP', 'DELCONSUMER', s, g, was[2])
    end
  end
  local room = limit - #out
  if room > 0 and redis.call('EXISTS', s) == 1 then
    local r = redis.call('XREADGROUP', 'GROUP', g, c, 'COUNT', room, 'STREAMS', s, '>')
    for _, e in ipairs(r and r[1][2] or {}) do
      local f = fields(e[2])
      hand(p, e[1], f, (tonumber(f.a) or 0) + 1)
    end
  end
end
if #out > 0 then return {out} end
local cursors = {}
for i = 1, LEVELS + 1 do
  local s = i <= LEVELS and KEYS[i] or KEYS[15]
  local last = redis.call('XREVRANGE', s, '+', '-', 'COUNT', 1)[1]
  cursors[i] = last and last[1] or '0-0'
end
local eta = redis.call('ZRANGE', KEYS[13], 0, 0, 'WITHSCORES')[2] or ''
local lease = redis.call('ZRANGE', KEYS[11], 0, 0, 'WITHSCORES')[2] or ''
return {out, cursors, {eta, lease}}
""".replace("LEVELS", str(LEVELS)).replace("SCAN", str(_SCAN))

# ARGV: group, then (priority, entry id, token) per delivery.
_ACK = _LUA_COMMON + """
for i = 2, #ARGV, 3 do
  local p = tonumber(ARGV[i])
  if owned(p .. '/' .. ARGV[i + 1], ARGV[i + 2]) then drop(ARGV[1], p, ARGV[i + 1]) end
end
return 1
"""

# ARGV: group, visible-at ('' for now), then (priority, entry id, token) per delivery.
_RELEASE = _LUA_COMMON + """
local g, at, delayed = ARGV[1], ARGV[2], false
for i = 3, #ARGV, 3 do
  local p, eid, token = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]
  if owned(p .. '/' .. eid, token) then
    local f = entry(KEYS[p + 1], eid)
    drop(g, p, eid)
    if f and at == '' then enqueue(g, p, f.id, f.body, tonumber(token) - 1)
    elseif f then postpone(at, p, f.id, f.body, tonumber(token) - 1); delayed = true end
  end
end
if delayed then wake() end
return 1
"""

# ARGV: group, died-at, then (priority, entry id, token, reason) per delivery.
_DEAD = _LUA_COMMON + """
for i = 3, #ARGV, 4 do
  local p, eid = tonumber(ARGV[i]), ARGV[i + 1]
  if owned(p .. '/' .. eid, ARGV[i + 2]) then
    local f = entry(KEYS[p + 1], eid)
    drop(ARGV[1], p, eid)
    if f then
      redis.call('XADD', KEYS[16], '*', 'id', f.id, 'body', f.body, 'p', p,
                 'reason', ARGV[i + 3], 'at', ARGV[2])
    end
  end
end
return 1
"""

# ARGV: group, consumer, now, new deadline, then (priority, entry id, token) per delivery.
# Returns the 0-based positions of deliveries whose lease was lost. XCLAIM JUSTID resets the
# entry's idle time, so XPENDING shows a renewed lease as fresh.
_EXTEND = _LUA_COMMON + """
local lost = {}
for i = 5, #ARGV, 3 do
  local p, eid = tonumber(ARGV[i]), ARGV[i + 1]
  local m = p .. '/' .. eid
  local until_ = redis.call('ZSCORE', KEYS[11], m)
  if owned(m, ARGV[i + 2]) and until_ and tonumber(until_) >= tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[11], ARGV[4], m)
    redis.call('XCLAIM', KEYS[p + 1], ARGV[1], ARGV[2], 0, eid, 'JUSTID')
  else
    table.insert(lost, (i - 5) / 3)
  end
end
return lost
"""

# ARGV: group, now, priority, start id, count. Deletes unread and expired entries of one
# stream. Returns {deleted, last entry id seen or ''}.
_PURGE = _LUA_COMMON + """
local g, now, p = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local batch = redis.call('XRANGE', KEYS[p + 1], ARGV[4], '+', 'COUNT', ARGV[5])
local n = 0
for _, e in ipairs(batch) do
  local until_ = redis.call('ZSCORE', KEYS[11], p .. '/' .. e[1])
  if not until_ then redis.call('XDEL', KEYS[p + 1], e[1]); n = n + 1
  elseif tonumber(until_) <= now then drop(g, p, e[1]); n = n + 1 end
end
local last = batch[#batch]
return {n, last and last[1] or ''}
"""

_PURGE_DELAYED = """
local n = redis.call('ZCARD', KEYS[13])
redis.call('UNLINK', KEYS[13], KEYS[14])
return n
"""

# ARGV: group, all ('1'/'0'), start id, count, wanted ids... Returns {moved, last id or ''}.
_REQUEUE = _LUA_COMMON + """
local want = {}
for i = 5, #ARGV do want[ARGV[i]] = true end
local batch = redis.call('XRANGE', KEYS[16], ARGV[3], '+', 'COUNT', ARGV[4])
local n = 0
for _, e in ipairs(batch) do
  local f = fields(e[2])
  if ARGV[2] == '1' or want[f.id] then
    enqueue(ARGV[1], tonumber(f.p), f.id, f.body, 0)
    redis.call('XDEL', KEYS[16], e[1])
    n = n + 1
  end
end
local last = batch[#batch]
return {n, last and last[1] or ''}
"""

# ARGV: group, consumer. Forget the consumer on every stream where it holds nothing.
_RETIRE = """
for i = 1, LEVELS do
  if redis.call('EXISTS', KEYS[i]) == 1
      and #redis.call('XPENDING', KEYS[i], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[i], ARGV[1], ARGV[2])
  end
end
return 1
""".replace("LEVELS", str(LEVELS))


def queue_keys(prefix: str, queue: str) -> list[str]:
    """The 16 keys of one queue, in the order the scripts expect, all in one hash slot."""
    tag = f"{{{prefix}:{queue}}}"
    return [*(f"{tag}:ready:{p}" for p in range(LEVELS)), f"{tag}:leases", f"{tag}:held",
            f"{tag}:delayed", f"{tag}:delayed:bodies", f"{tag}:wake", f"{tag}:dead"]


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _receipt(d: Delivery) -> list[Any]:
    priority, entry_id, token = d.receipt
    return [priority, entry_id, token]


class RedisTransport(Transport):
    """Streams + consumer groups per queue and priority; leases and delays in sorted sets.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db][?prefix=hubbub&socket_timeout=10]``;
            ``rediss://`` adds TLS options ``ssl_cert_reqs``, ``ssl_ca_certs``,
            ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``.
        clock: the clock for leases and ETAs (all hosts must agree on the time).

    Raises:
        ConfigurationError: the URL is malformed or has an unknown option.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(max_message_size=512 * 1024 * 1024)

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = RedisURL.parse(url)
        self.url = str(self.config)
        self.clock = clock
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.client_name = f"hubbub-{self.consumer}".replace(" ", "_")
        timeout = self.config.options.get("socket_timeout")
        # One XREAD BLOCK stays well inside the socket timeout; a longer wait loops.
        self._max_block = None if timeout is None else max(0.1, timeout / 2)
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._known: set[str] = set()  # queues this instance registered
        self._consumed: set[str] = set()  # queues this instance is a consumer of

    def __repr__(self) -> str:
        return f"RedisTransport({self.url!r})"

    @property
    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise TransportError(f"redis transport {self.url} is not connected; call connect()")
        return self._redis

    async def _run(self, script: str, queue: str, args: Sequence[Any]) -> Any:
        keys = queue_keys(self.config.prefix, queue)
        return await self._scripts[script](keys=keys, args=[GROUP, *args])

    async def connect(self) -> None:
        if self._redis is None:
            self._redis = self.config.client(name=self.client_name)
            self._scripts = {
                name: self._redis.register_script(text) for name, text in (
                    ("publish", _PUBLISH), ("claim", _CLAIM), ("ack", _ACK),
                    ("release", _RELEASE), ("dead", _DEAD), ("extend", _EXTEND),
                    ("purge", _PURGE), ("purge_delayed", _PURGE_DELAYED),
                    ("requeue", _REQUEUE), ("retire", _RETIRE))
            }
        with translate(self.config):
            await self._client.ping()

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is None:
            return
        try:
            with contextlib.suppress(RedisError, OSError):
                for queue in self._consumed:
                    keys = queue_keys(self.config.prefix, queue)
                    await self._scripts["retire"](keys=keys, args=[GROUP, self.consumer])
        finally:
            await client.aclose()

    async def publish(self, items: Sequence[Outgoing]) -> None:
        if not items:
            return
        now = self.clock.time()
        by_queue: dict[str, list[Any]] = {}
        for i in items:
            priority = min(max(i.priority, 0), LEVELS - 1)
            eta = repr(i.eta) if i.eta is not None and i.eta > now else ""
            by_queue.setdefault(i.queue, []).extend((priority, i.id, i.body, eta))
        with translate(self.config):
            new = set(by_queue) - self._known
            if new:
                await self._client.sadd(f"{self.config.prefix}:queues", *sorted(new))
                self._known |= new
            await asyncio.gather(*(self._publish(q, flat) for q, flat in by_queue.items()))

    async def _publish(self, queue: str, flat: list[Any]) -> None:
        for chunk in _chunks(flat, 4 * _CHUNK):  # one after another: FIFO across chunks
            await self._run("publish", queue, chunk)

    async def fetch(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        names = list(dict.fromkeys(queues))
        if limit <= 0 or not names:
            return []
        self._consumed.update(names)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        with translate(self.config):
            while True:
                got, cursors, due = await self._claim(names, limit, lease)
                remaining = deadline - loop.time()
                if got or remaining <= 0:
                    return got
                if due is not None:  # a delayed message or a lease comes due before then
                    remaining = min(remaining, max(0.01, due - self.clock.time()))
                if self._max_block is not None:
                    remaining = min(remaining, self._max_block)
                await self._client.xread(cursors, count=1, block=max(1, int(remaining * 1000)))

    async def _claim(
        self, names: list[str], limit: int, lease: float
    ) -> tuple[list[Delivery], dict[KeyT, StreamIdT], float | None]:
        """One pass over the queues. Cursors and the next due time matter only if empty."""
        now = self.clock.time()
        until = now + lease
        got: list[Delivery] = []
        cursors: dict[KeyT, StreamIdT] = {}
        due: float | None = None
        for queue in names:
            reply = await self._run("claim", queue, [self.consumer, repr(now), repr(until),
                                                     limit - len(got)])
            for priority, entry_id, id_, body, attempts in reply[0]:
                receipt = (int(priority), entry_id.decode(), str(attempts))
                got.append(Delivery(queue, body, id_.decode(), int(attempts), int(priority),
                                    receipt=receipt, lease_until=until))
            if len(got) >= limit:
                break
            if len(reply) > 1:
                keys = queue_keys(self.config.prefix, queue)
                cursors.update(zip([*keys[:LEVELS], keys[14]],
                                   (c.decode() for c in reply[1]), strict=True))
                for score in reply[2]:
                    if score:
                        due = float(score) if due is None else min(due, float(score))
        return got, cursors, due

    async def _each_queue(
        self, script: str, deliveries: Sequence[Any], head: Sequence[Any],
        row: Callable[[Any], Sequence[Any]],
    ) -> list[Any]:
        """Run ``script`` over ``deliveries``: queues at once, chunks of one queue in order.

        Returns:
            ``(chunk, reply)`` pairs.
        """
        by_queue: dict[str, list[Any]] = {}
        for d in deliveries:
            by_queue.setdefault(d.delivery.queue if isinstance(d, DeadLetterRequest)
                                else d.queue, []).append(d)

        async def one_queue(queue: str, items: list[Any]) -> list[tuple[Sequence[Any], Any]]:
            return [(chunk, await self._run(script, queue,
                                            [*head, *(x for d in chunk for x in row(d))]))
                    for chunk in _chunks(items)]

        with translate(self.config):
            done = await asyncio.gather(*(one_queue(q, ds) for q, ds in by_queue.items()))
        return [pair for pairs in done for pair in pairs]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self._each_queue("ack", deliveries, [], _receipt)

    async def release(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        at = repr(self.clock.time() + delay) if delay > 0 else ""
        await self._each_queue("release", deliveries, [at], _receipt)

    async def dead_letter(self, requests: Sequence[DeadLetterRequest]) -> None:
        await self._each_queue("dead", requests, [repr(self.clock.time())],
                               lambda r: [*_receipt(r.delivery), r.reason])

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        now = self.clock.time()
        until = now + lease
        lost: list[Delivery] = []
        results = await self._each_queue(
            "extend", deliveries, [self.consumer, repr(now), repr(until)], _receipt)
        for chunk, positions in results:
            gone = {int(p) for p in positions}
            for i, d in enumerate(chunk):
                if i in gone:
                    lost.append(d)
                else:
                    d.lease_until = until
        return lost

    async def purge(self, queue: str) -> int:
        now = repr(self.clock.time())
        with translate(self.config):
            total = int(await self._run("purge_delayed", queue, []))
            for priority in range(LEVELS):
                start = "-"
                while True:
                    n, last = await self._run("purge", queue, [now, priority, start, _SCAN])
                    total += int(n)
                    if not last:
                        break
                    start = "(" + last.decode()
        return total

    async def _queues(self) -> list[str]:
        with translate(self.config):
            names = await self._client.smembers(f"{self.config.prefix}:queues")
        return sorted(n.decode() if isinstance(n, bytes) else n for n in names)

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        names = await self._queues() if queues is None else list(queues)
        now = repr(self.clock.time())
        pipe = self._client.pipeline(transaction=False)
        for queue in names:
            keys = queue_keys(self.config.prefix, queue)
            for stream in keys[:LEVELS]:
                pipe.xlen(stream)
            pipe.zcard(keys[10])
            pipe.zcount(keys[10], "-inf", now)
            pipe.zcard(keys[12])
            pipe.zcount(keys[12], "-inf", now)
            pipe.xlen(keys[15])
        with translate(self.config):
            counts = await pipe.execute()
        out = []
        width = LEVELS + 5
        for i, queue in enumerate(names):
            c = counts[i * width : (i + 1) * width]
            stored, leases, expired, delayed, due, dead = sum(c[:LEVELS]), *c[LEVELS:]
            out.append(QueueStats(queue, ready=stored - leases + expired + due,
                                  delayed=delayed - due, leased=leases - expired, dead=dead))
        return out

    async def dead_letters(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        names = await self._queues() if queue is None else [queue]
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.xrange(queue_keys(self.config.prefix, name)[15], count=limit)
        with translate(self.config):
            replies = await pipe.execute()
        found = []
        for name, entries in zip(names, replies, strict=True):
            for _, f in entries:
                found.append(DeadLetter(f[b"id"].decode(), name, f[b"body"],
                                        f[b"reason"].decode(), float(f[b"at"])))
        found.sort(key=lambda d: d.died_at)  # stable: per queue the stream order stays
        return found[:limit]

    async def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        if ids is not None and not ids:
            return 0
        head = ["1" if ids is None else "0"]
        total = 0
        with translate(self.config):
            for queue in await self._queues():
                start = "-"
                while True:
                    n, last = await self._run("requeue", queue,
                                              [*head, start, _SCAN, *(ids or ())])
                    total += int(n)
                    if not last:
                        break
                    start = "(" + last.decode()
        return total
