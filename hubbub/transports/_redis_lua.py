"""The Lua scripts of the Redis transport and the key layout they expect.

Every script runs on one queue's keys (:class:`QueueKeys`, which says which ``KEYS[i]`` is
which), all under the queue's hash tag (one Redis Cluster slot). ARGV[1] is always the
consumer group. ``SCRIPTS`` maps the transport's name for each script to its text.

Invariants the scripts keep, all inside one queue's hash slot:

- every stream entry at or before the group's cursor is pending, and every pending entry has
  a lease: a member ``"<priority>/<entry id>"`` in the ``leases`` zset (score: deadline)
  and in the ``held`` hash (value: attempts so far, which doubles as the handout's token:
  each handout of one entry counts one more, so a stale holder's token never matches);
- ack, release and dead-letter XACK *and* XDEL, so a stream holds only live messages;
- a release re-adds the body as a new entry carrying the attempts so far, so a release
  never counts as an attempt;
- an entry written by another tool is never a script error: a missing ``id`` or ``body``
  is handed out as nil (false) and copied on as '', a count or priority that is not a
  number counts as 0, so the worker dead-letters it instead of every claim failing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from hubbub._text import clean_text
from hubbub.transports._safe import check_queue, due_at
from hubbub.transports.base import Outgoing

GROUP = "hubbub"  # the consumer group of every ready stream
LEVELS = 10  # priorities 0..9, one stream each
CHUNK = 1000  # messages per script call when publishing or acking many
SCAN = 256  # entries one script call looks at, so that no call blocks Redis for long

# Lua. KEYS[i] of every queue script: see QueueKeys below (the one place the order is kept).
_LUA_COMMON = """
local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function count(v)
  local n = tonumber(v)
  if not n or n ~= n or n < 0 or n > 1e9 then return 0 end
  return math.floor(n)
end
local function level(v) return math.min(count(v), 9) end
local function entry(s, eid)
  local e = redis.call('XRANGE', s, eid, eid)[1]
  if e then return fields(e[2]) end
end
local function enqueue(g, p, id, body, a)
  local s = KEYS[p + 1]
  id, body = id or '', body or ''
  if redis.call('EXISTS', s) == 0 then redis.call('XGROUP', 'CREATE', s, g, '0', 'MKSTREAM') end
  if a and a > 0 then return redis.call('XADD', s, '*', 'id', id, 'body', body, 'a', a) end
  return redis.call('XADD', s, '*', 'id', id, 'body', body)
end
local function postpone(at, p, id, body, a)
  local did = redis.call('XADD', KEYS[14], '*', 'id', id or '', 'body', body or '', 'p', p,
                         'a', a)
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
local function receipts(packed) return string.gmatch(packed, '(%d+) ([^ ,]+) ([^,]+)') end
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
  if f then enqueue(g, level(f.p), f.id, f.body, count(f.a)) end
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
  table.insert(out, {p, eid, f.id or false, f.body or false, attempts})
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
    local r = redis.pcall('XREADGROUP', 'GROUP', g, c, 'COUNT', room, 'STREAMS', s, '>')
    if type(r) == 'table' and r.err then
      -- Another tool created the stream (XADD) before hubbub did: adopt it, from its start.
      if not string.find(r.err, 'NOGROUP', 1, true) then return redis.error_reply(r.err) end
      redis.call('XGROUP', 'CREATE', s, g, '0')
      r = redis.call('XREADGROUP', 'GROUP', g, c, 'COUNT', room, 'STREAMS', s, '>')
    end
    for _, e in ipairs(r and r[1][2] or {}) do
      local f = fields(e[2])
      hand(p, e[1], f, count(f.a) + 1)
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
""".replace("LEVELS", str(LEVELS)).replace("SCAN", str(SCAN))

# ARGV: group, the deliveries' receipts (see pack_receipts).
_ACK = _LUA_COMMON + """
for p, eid, token in receipts(ARGV[2]) do
  p = tonumber(p)
  if owned(p .. '/' .. eid, token) then drop(ARGV[1], p, eid) end
end
return 1
"""

# ARGV: group, visible-at ('' for now), the deliveries' receipts (see pack_receipts).
_RELEASE = _LUA_COMMON + """
local g, at, delayed = ARGV[1], ARGV[2], false
for p, eid, token in receipts(ARGV[3]) do
  p = tonumber(p)
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

# ARGV: group, died-at, retention cutoff, cap, the deliveries' receipts (see pack_receipts),
# then each delivery's reason. Then drops, oldest first, the dead letters that died before
# the cutoff (an 'at' that is not a number counts as long ago) and those past the cap.
# Returns {dropped as expired, dropped over the cap}.
_DEAD = _LUA_COMMON + """
local i = 5
for p, eid, token in receipts(ARGV[5]) do
  p, i = tonumber(p), i + 1
  if owned(p .. '/' .. eid, token) then
    local f = entry(KEYS[p + 1], eid)
    drop(ARGV[1], p, eid)
    if f then
      redis.call('XADD', KEYS[16], '*', 'id', f.id or '', 'body', f.body or '', 'p', p,
                 'reason', ARGV[i], 'at', ARGV[2])
    end
  end
end
local cutoff, expired = tonumber(ARGV[3]), 0
repeat
  local head = redis.call('XRANGE', KEYS[16], '-', '+', 'COUNT', SCAN)
  local more = #head == SCAN
  for _, e in ipairs(head) do
    if (tonumber(fields(e[2]).at) or 0) >= cutoff then more = false; break end
    redis.call('XDEL', KEYS[16], e[1])
    expired = expired + 1
  end
until not more
return {expired, redis.call('XTRIM', KEYS[16], 'MAXLEN', ARGV[4])}
""".replace("SCAN", str(SCAN))

# ARGV: group, consumer, now, new deadline, the deliveries' receipts (see pack_receipts).
# Returns the 0-based positions of deliveries whose lease was lost. XCLAIM JUSTID resets the
# entry's idle time, so XPENDING shows a renewed lease as fresh.
_EXTEND = _LUA_COMMON + """
local lost, i = {}, -1
for p, eid, token in receipts(ARGV[5]) do
  p, i = tonumber(p), i + 1
  local m = p .. '/' .. eid
  local until_ = redis.call('ZSCORE', KEYS[11], m)
  if owned(m, token) and until_ and tonumber(until_) >= tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[11], ARGV[4], m)
    redis.call('XCLAIM', KEYS[p + 1], ARGV[1], ARGV[2], 0, eid, 'JUSTID')
  else
    table.insert(lost, i)
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
    enqueue(ARGV[1], level(f.p), f.id, f.body, 0)
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
  -- pcall: a stream a lone XADD made has no group until a claim adopts it
  local held = redis.call('EXISTS', KEYS[i]) == 1
               and redis.pcall('XPENDING', KEYS[i], ARGV[1], '-', '+', 1, ARGV[2])
  if type(held) == 'table' and not held.err and #held == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[i], ARGV[1], ARGV[2])
  end
end
return 1
""".replace("LEVELS", str(LEVELS))


SCRIPTS: dict[str, str] = {
    "publish": _PUBLISH, "claim": _CLAIM, "ack": _ACK, "release": _RELEASE, "dead": _DEAD,
    "extend": _EXTEND, "purge": _PURGE, "purge_delayed": _PURGE_DELAYED,
    "requeue": _REQUEUE, "retire": _RETIRE,
}


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """``items`` in slices of ``size``, in order."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def pack_receipts(receipts: Iterable[tuple[int, str, str]]) -> str:
    """Receipts ``(priority, stream entry id, token)`` as one script argument,
    ``"p eid token,p eid token"``: redis-py then encodes one argument per batch instead of
    three per delivery. Entry ids (``ms-seq``) and tokens (counts) hold neither a space nor a
    comma, and the scripts split it back (``receipts`` in the Lua)."""
    return ",".join([f"{p} {e} {t}" for p, e, t in receipts])


def publish_argv(items: Iterable[Outgoing], now: float) -> dict[str, list[Any]]:
    """The ``publish`` script's ARGV after the group, per queue: (priority, id, body, eta or
    '') of each item, in order; every item's queue is checked first.

    Raises:
        MessageRejectedByBroker: a queue name Redis keys cannot hold.
    """
    by_queue: dict[str, list[Any]] = {}
    for i in items:
        check_queue(i)
        priority = min(max(i.priority, 0), LEVELS - 1)
        at = due_at(i.eta, now)
        eta = "" if at is None else repr(at)
        by_queue.setdefault(i.queue, []).extend((priority, clean_text(i.id), i.body, eta))
    return by_queue


class QueueKeys(NamedTuple):
    """The Redis keys of one queue, named for Python; the scripts read them by position.

    ``lua()`` gives them in the order the scripts expect. ``KEYS[i]`` in the Lua text is:

    =======  ==================  ========================================================
    KEYS[i]  field               holds
    =======  ==================  ========================================================
    1 .. 10  ``ready[0..9]``     ready stream of priority 0..9 (``KEYS[p + 1]``)
    11       ``leases``          zset: ``"<priority>/<entry id>"`` -> lease deadline
    12       ``held``            hash: the same member -> attempts (the handout token)
    13       ``delayed``         zset: entry id in ``delayed_bodies`` -> eta
    14       ``delayed_bodies``  stream of delayed messages
    15       ``wake``            stream, MAXLEN 1: bumped when a delayed message is added
    16       ``dead``            stream of dead letters with their reasons
    =======  ==================  ========================================================

    Change the order here and in the Lua text together; nothing else knows it.
    """

    ready: tuple[str, ...]
    leases: str
    held: str
    delayed: str
    delayed_bodies: str
    wake: str
    dead: str

    @classmethod
    def of(cls, prefix: str, queue: str) -> QueueKeys:
        """The keys of ``queue``, all under the hash tag ``{prefix:queue}``."""
        tag = f"{{{prefix}:{queue}}}"
        return cls(tuple(f"{tag}:ready:{p}" for p in range(LEVELS)), f"{tag}:leases",
                   f"{tag}:held", f"{tag}:delayed", f"{tag}:delayed:bodies", f"{tag}:wake",
                   f"{tag}:dead")

    @property
    def sync(self) -> str:
        """A counter in the queue's slot that only ``?wait_replicas`` writes (then WAITs on);
        no script reads it."""
        return self.dead.removesuffix(":dead") + ":sync"

    def lua(self) -> list[str]:
        """The 16 keys in the order of the table above, as a script's ``keys=``."""
        return [*self.ready, self.leases, self.held, self.delayed, self.delayed_bodies,
                self.wake, self.dead]
