"""The task history in Redis (``RedisResults``' ``# -- history --`` part, kept apart).

A hash ``<prefix>:history:rows`` (id -> JSON row), a hash ``<prefix>:history:states``
(id -> state), and sorted sets scored by the time of each row's last change:
``<prefix>:history:all`` and one per task name, state and worker, named in the set
``<prefix>:history:indexes`` so that a prune reaches them all. The scripts touch keys they
build from the prefix, so on Redis Cluster ``RedisResults`` passes a hash-tagged prefix
(``{<prefix>}``): every history key is in one slot, where such scripts may run.

A task's details are keys of their own, each expiring with the row: ``history:note:<id>``
(its :class:`~hubbub.results.history.TaskNote` as JSON), ``history:attempts:<id>`` (a hash
of attempt number -> JSON, the latest ``MAX_ATTEMPTS``) and ``history:retried:<id>`` (the id
it was retried as); a prune deletes those of the rows it drops. The attempt that ended a
task in SUCCESS on its first run, the common case, is not written: it says nothing its row
does not, and :meth:`RedisHistory.detail` makes it again from the row (a key less per task).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from hubbub._redis_scripts import eval_each
from hubbub.codecs import json_dumps, json_loads
from hubbub.results.base import HistoryQuery, HistoryRow, ResultRecord, State, id_bytes
from hubbub.results.history import (
    MAX_ATTEMPTS,
    Attempt,
    HistoryDetail,
    dump,
    load_attempts,
    load_note,
)

_SWEEP_EVERY = 60.0  # seconds between prunes of old history rows
_SCAN_MAX = 50_000  # rows a search reads at most before it answers with what it found


class RedisHistory:
    """Writes, searches and prunes the history rows of one ``RedisResults``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._swept_at = 0.0

    def _hkey(self, *parts: str) -> bytes:
        return ":".join((self.prefix, "history", *parts)).encode("utf-8", "surrogatepass")

    def args(self, records: Sequence[ResultRecord], now: float, ttl: float
             ) -> tuple[tuple[bytes, ...], list[Any]]:
        """The keys and arguments of :data:`HISTORY_LUA`'s ``history`` for ``records``."""
        argv: list[Any] = [self._hkey().decode("utf-8", "surrogatepass") + ":", repr(now),
                           max(1, int(ttl)), MAX_ATTEMPTS]
        for record in records:
            row = HistoryRow.of(record, now)
            attempt = record.attempt
            if attempt is not None and row.retries == 0 and _told_by_row(attempt, row):
                attempt = None  # made again from the row (detail)
            argv += [id_bytes(row.id), json_dumps(row.to_json()), row.state.value,
                     row.task or "", row.worker or "",
                     b"" if record.note is None else dump(record.note),
                     "" if attempt is None else attempt.number,
                     b"" if attempt is None else dump(attempt)]
        keys = (self._hkey("rows"), self._hkey("all"), self._hkey("indexes"),
                self._hkey("states"))
        return keys, argv

    async def write(self, client: aioredis.Redis, records: Sequence[ResultRecord], now: float,
                    ttl: float) -> None:
        """Write the rows of ``records``, and their notes and attempts, in one script call
        for the batch (a worker pays one command, not ten per record); prune rows older
        than ``ttl`` once a minute. An id that comes twice gets the row of its last record."""
        if not records:
            return
        keys, argv = self.args(records, now, ttl)
        # As one call: on a cluster, one script on the history's slot.
        await eval_each(client, _HISTORY, [(4, *keys, *argv)], cluster=True)
        await self.sweep(client, now, ttl)

    async def sweep(self, client: aioredis.Redis, now: float, ttl: float) -> None:
        """Prune rows older than ``ttl``, at most once a minute."""
        if now - self._swept_at > _SWEEP_EVERY:
            self._swept_at = now
            await self.prune(client, now - ttl)

    def _detail_key(self, kind: str, id: str) -> bytes:
        return self._hkey(kind, "") + id_bytes(id)

    async def detail(self, client: aioredis.Redis, id: str) -> HistoryDetail:
        """Task ``id``'s note, attempts and retry link."""
        pipe = client.pipeline(transaction=False)
        pipe.get(self._detail_key("note", id))
        pipe.hvals(self._detail_key("attempts", id))
        pipe.get(self._detail_key("retried", id))
        pipe.hget(self._hkey("rows"), id_bytes(id))
        note, attempts, retried, row = await pipe.execute()
        if isinstance(retried, bytes):
            retried = retried.decode("utf-8", "surrogateescape")
        found = load_attempts(list(attempts))
        last = _success_of(row)
        if last is not None and last.number not in {a.number for a in found}:
            found = load_attempts([*map(dump, found), dump(last)])  # in order, the latest kept
        return HistoryDetail(load_note(note), found, retried)

    async def link_retry(self, client: aioredis.Redis, id: str, retry: str,
                         ttl: float) -> None:
        """Keep ``retry`` as the task ``id`` was retried as, for ``ttl`` seconds."""
        await client.set(self._detail_key("retried", id), retry.encode("utf-8", "surrogatepass"),
                         ex=max(1, int(ttl)))

    def _queue_prune(self, pipe: Any, before: float) -> None:
        # The rows go by the "all" index; every other index drops the same scores.
        pipe.eval(_PRUNE, 4, self._hkey("all"), self._hkey("rows"), self._hkey("indexes"),
                  self._hkey("states"), repr(before), self._hkey("").decode(
                      "utf-8", "surrogatepass"))

    async def prune(self, client: aioredis.Redis, before: float) -> None:
        """Delete the rows last changed before ``before``, from the rows and every index."""
        pipe = client.pipeline(transaction=False)
        self._queue_prune(pipe, before)
        await pipe.execute()

    async def search(self, client: aioredis.Redis, query: HistoryQuery,
                     floor: float | None) -> list[HistoryRow]:
        """The rows matching ``query`` changed since ``floor``, newest first: read from the
        narrowest index, or from Redis' intersection of several."""
        since = query.since
        if floor is not None:
            since = floor if since is None else max(since, floor)
        query = dataclasses.replace(query, since=since)
        if query.id is not None:
            data = await client.hget(self._hkey("rows"), id_bytes(query.id))
            rows = [] if data is None else [_row(data)]
            return [r for r in rows if query.matches(r)][: query.limit]
        indexes = [self._hkey(kind, value) for kind, value in (
            ("worker", query.worker), ("task", query.task),
            ("state", None if query.state is None else query.state.value))
            if value is not None] or [self._hkey("all")]
        if len(indexes) > 1:
            members = await self._intersect(client, indexes, since, query.until, query.limit)
            datas = await client.hmget(self._hkey("rows"), members) if members else []
            return [row for data in datas if data is not None
                    and query.matches(row := _row(data))][: query.limit]
        low = "-inf" if since is None else repr(since)
        high = "+inf" if query.until is None else f"({query.until!r}"
        found: list[HistoryRow] = []
        offset = 0
        # One index holds only matching rows: read no more than asked for (the loop goes on
        # only for rows pruned or changed since the index was read).
        step = query.limit
        while len(found) < query.limit and offset < _SCAN_MAX:
            members = list(await client.zrevrangebyscore(indexes[0], high, low, start=offset,
                                                         num=step))
            if not members:
                break
            offset += len(members)
            for data in await client.hmget(self._hkey("rows"), members):
                if data is not None and query.matches(row := _row(data)):
                    found.append(row)
            if len(members) < step:
                break
        return found[: query.limit]

    async def _intersect(self, client: aioredis.Redis, indexes: list[bytes],
                         since: float | None, until: float | None, limit: int) -> list[Any]:
        """The newest ``limit`` members in every one of ``indexes``, within the times."""
        pairs: list[Any] = list(await client.zinter(indexes, aggregate="MAX", withscores=True))
        kept = [(score, member) for member, score in pairs
                if (since is None or score >= since) and (until is None or score < until)]
        kept.sort(reverse=True)
        return [member for _, member in kept[:limit]]


def _told_by_row(attempt: Attempt, row: HistoryRow) -> bool:
    """Whether ``attempt`` says nothing its history ``row`` does not: the attempt that ended
    a task in SUCCESS (number retries+1, at finished_at, the row's worker, no error or
    delay). Only the first attempt's is left unwritten: a later one's write also keeps the
    earlier attempts' key as long as the row."""
    return (row.state == State.SUCCESS and attempt.outcome == State.SUCCESS.value
            and attempt.error is None and attempt.delay is None
            and attempt.number == row.retries + 1 and attempt.at == row.finished_at
            and attempt.worker == row.worker)


def _success_of(data: bytes | str | None) -> Attempt | None:
    """The attempt a SUCCESS history row stored as ``data`` ended (None for another row)."""
    if data is None:
        return None
    try:
        row = _row(data)
    except (KeyError, TypeError, ValueError):
        return None
    if row.state != State.SUCCESS or row.finished_at is None:
        return None
    return Attempt(row.retries + 1, float(row.finished_at), row.worker, State.SUCCESS.value)


def _row(data: bytes | str) -> HistoryRow:
    return HistoryRow.from_json(json_loads(data.encode() if isinstance(data, str) else data))


# history(ko, ao, written): KEYS[ko + 1..ko + 4] are the rows hash, the "all" index, the set
# of index names, the hash of each row's state (so that a change leaves only its old state's
# index). ARGV[ao + 1..ao + 4]: the key prefix ('<prefix>:history:'), now, the details' ttl in
# seconds, MAX_ATTEMPTS; then per record: member (id), row JSON, state, task ('' none),
# worker ('' none), note JSON ('' none), attempt number and JSON ('' none). ``written``: nil,
# or a 0/1 flag per record (only those with 1 are written). An id that comes more than once
# gets the row of its last record; every record's note and attempt are kept, as keys of their
# own that expire with the row. RedisResults runs it in the script that stores the records.
HISTORY_LUA = """
local function history(ko, ao, written)
  local prefix, now, ttl, most = ARGV[ao + 1], ARGV[ao + 2], ARGV[ao + 3], ARGV[ao + 4]
  local last, seen = {}, {}
  for i = ao + 5, #ARGV, 8 do
    local n = (i - ao - 5) / 8 + 1
    if not written or written[n] == 1 then last[ARGV[i]] = i end
  end
  for i = ao + 5, #ARGV, 8 do
    local n = (i - ao - 5) / 8 + 1
    local member, state, task, worker = ARGV[i], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    if last[member] == i then
      redis.call('HSET', KEYS[ko + 1], member, ARGV[i + 1])
      redis.call('ZADD', KEYS[ko + 2], now, member)
      local old = redis.call('HGET', KEYS[ko + 4], member)
      if old and old ~= state then redis.call('ZREM', prefix .. 'state:' .. old, member) end
      redis.call('HSET', KEYS[ko + 4], member, state)
      local keys = {prefix .. 'state:' .. state}
      if task ~= '' then keys[#keys + 1] = prefix .. 'task:' .. task end
      if worker ~= '' then keys[#keys + 1] = prefix .. 'worker:' .. worker end
      for _, key in ipairs(keys) do
        redis.call('ZADD', key, now, member)
        if not seen[key] then seen[key] = true; redis.call('SADD', KEYS[ko + 3], key) end
      end
    end
    if (not written or written[n] == 1) and ARGV[i + 5] ~= '' then
      redis.call('SET', prefix .. 'note:' .. member, ARGV[i + 5], 'EX', ttl)
    end
    if (not written or written[n] == 1) and ARGV[i + 6] ~= '' then
      local key, number = prefix .. 'attempts:' .. member, tonumber(ARGV[i + 6])
      redis.call('HSET', key, ARGV[i + 6], ARGV[i + 7])
      if number > tonumber(most) then
        redis.call('HDEL', key, tostring(number - tonumber(most)))
      end
      redis.call('EXPIRE', key, ttl)
    end
  end
end
"""
_HISTORY = HISTORY_LUA + """
history(0, 0, nil)
return 1
"""


# KEYS: the "all" index, the rows hash, the set of index names, the states hash.
# ARGV: the cut-off time, the detail key prefix ('<prefix>:history:').
_PRUNE = """
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 10000)
for i = 1, #old, 500 do
  redis.call('HDEL', KEYS[2], unpack(old, i, math.min(i + 499, #old)))
  redis.call('HDEL', KEYS[4], unpack(old, i, math.min(i + 499, #old)))
end
for _, id in ipairs(old) do
  redis.call('DEL', ARGV[2] .. 'note:' .. id, ARGV[2] .. 'attempts:' .. id,
             ARGV[2] .. 'retried:' .. id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for _, index in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. ARGV[1])
  if redis.call('EXISTS', index) == 0 then redis.call('SREM', KEYS[3], index) end
end
return #old
"""
