"""The Lua scripts of ``RedisResults`` (kept apart): the records' store and read, and the
chord join and flags. Each takes its keys as KEYS, so on a cluster a call names keys of one
slot; the history's part (:data:`~hubbub.results._redis_history.HISTORY_LUA`) rides in the
store's call on one Redis."""

from __future__ import annotations

from hubbub.results._redis_history import HISTORY_LUA
from hubbub.results.base import REPLACE_REVOKED, STICKY_STATES

# KEYS: records, one or many (on a cluster one per call: a call's keys share a slot).
# ARGV: expires-at ('' never), ttl ms ('' never), now, the count of states that keep a
# record from being written (store_unless) and those states, then state, record and ready
# ('1'/'0') of each key in turn. The store rule of results.base.replaces (SQLite's too),
# applied key by key in order (one id twice: the second sees the first). Returns 1 for each
# record written, else 0. With the history on one Redis (STORE_WITH_HISTORY), the four
# history keys follow the records' and its arguments follow theirs: the rows of the records
# written go in the same call.
STORE_LUA = """
local function store(n)
  local keep = tonumber(ARGV[4])
  local out = {}
  for k = 1, n do
    local i = 4 + keep + 3 * k - 2
    local state = ARGV[i]
    local old = redis.call('HMGET', KEYS[k], 'state', 'expires_at')
    local live = not old[2] or old[2] == '' or tonumber(old[2]) > tonumber(ARGV[3])
    local write = 1
    if live and (STICKY) and not (old[1] == 'REVOKED' and (OVER_REVOKED)) then write = 0 end
    for j = 5, 4 + keep do
      if live and old[1] == ARGV[j] then write = 0 end
    end
    if write == 1 then
      redis.call('HSET', KEYS[k], 'state', state, 'record', ARGV[i + 1], 'expires_at', ARGV[1])
      if ARGV[2] == '' then redis.call('PERSIST', KEYS[k])
      else redis.call('PEXPIRE', KEYS[k], ARGV[2]) end
      if ARGV[i + 2] == '1' then redis.call('PUBLISH', KEYS[k], state) end
    end
    out[k] = write
  end
  return out
end
""".replace("STICKY", " or ".join(f"old[1] == '{s.value}'" for s in sorted(STICKY_STATES))
            ).replace("OVER_REVOKED", " or ".join(f"state == '{s.value}'"
                                                  for s in sorted(REPLACE_REVOKED)))
STORE = STORE_LUA + "return store(#KEYS)"
STORE_WITH_HISTORY = STORE_LUA + HISTORY_LUA + """
local n = #KEYS - 4
local out = store(n)
history(n, 4 + tonumber(ARGV[4]) + 3 * n, out)
return out
"""
# KEYS: records. Returns the record and expires-at of each (nil where there is none).
READ = """
local out = {}
for k = 1, #KEYS do out[k] = redis.call('HMGET', KEYS[k], 'record', 'expires_at') end
return out
"""


# -- canvas: KEYS: one chord's members hash, its flags hash (one hash tag: one slot). ARGV:
# ttl ms ('' never), then member id and stored value for each member joining, in order. The
# first value of a member is kept; the count is of distinct members. Returns added and count
# for each member, then whether the body was sent.
JOIN = """
local out = {}
for i = 2, #ARGV, 2 do
  out[#out + 1] = redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  out[#out + 1] = redis.call('HLEN', KEYS[1])
end
out[#out + 1] = redis.call('HEXISTS', KEYS[2], 'fired')
if ARGV[1] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return out
"""
# -- canvas: KEYS: a chord's flags hash. ARGV: flag, ttl ms ('' never). 1 if it set the flag.
MARK = """
local set = redis.call('HSETNX', KEYS[1], ARGV[1], '1')
if ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return set
"""
