"""Results in Redis: ``redis://host:port/db?prefix=hubbub`` (``rediss://`` for TLS).

One hash per task, ``<prefix>:result:<id>`` with fields ``state``, ``record`` (the JSON of
:func:`~hubbub.results.base.encode_record`) and ``expires_at``; Redis expires the key after
the TTL. A Lua script does the upsert, so a sticky state is never replaced, and publishes
the state on a channel named like the key when it is ready. ``wait`` listens on that channel
through one pub/sub connection shared by every waiter of a backend.

The worker registry is one string key per worker, ``<prefix>:worker:<name>`` (its JSON
entry, with a PEXPIRE of the heartbeat's ttl), and a sorted set ``<prefix>:workers`` of the
names scored by expiry, so that listing needs no SCAN: a reader drops the names whose score
passed or whose key Redis has expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from hubbub._redis import RedisURL, translate
from hubbub._redis_scripts import eval_each, sha_of
from hubbub._redis_wire import bulk, command, exchange
from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.codecs import json_dumps, json_loads
from hubbub.errors import ResultError, ResultUnavailable
from hubbub.limits.redis import RedisLimits
from hubbub.results._redis_history import RedisHistory
from hubbub.results._redis_lua import JOIN, MARK, READ, STORE, STORE_WITH_HISTORY
from hubbub.results._redis_wait import Listener
from hubbub.results.base import (
    READY_STATES,
    ChordJoin,
    ChordMember,
    HistoryQuery,
    HistoryRow,
    ResultBackend,
    ResultRecord,
    State,
    decode_entry,
    decode_record,
    decode_values,
    encode_entry,
    encode_record,
    encode_value,
    id_bytes,
)
from hubbub.results.history import HistoryDetail

_RECHECK = 5.0  # a waiter reads the record at least this often, should a notice be lost
_PER_CALL = 1000  # keys one script call takes: Redis serves others between calls


class RedisResults(ResultBackend):
    """Task states and values in Redis hashes with a TTL; waiting uses pub/sub.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db][?prefix=hubbub]``, the same form
            as :class:`~hubbub.transports.redis.RedisTransport` takes.
        clock: the clock for ``expires_at``; Redis itself expires keys on its own clock.

    Raises:
        ConfigurationError: the URL is malformed or has an unknown option.
    """

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = RedisURL.parse(url)
        self.url = str(self.config)
        self.clock = clock
        self.client_name = f"hubbub-results-{uuid.uuid4().hex[:8]}"
        self._redis: aioredis.Redis | None = None
        self._listener: Listener | None = None
        # -- history: its scripts build index keys from the prefix, so on a cluster every
        # history key carries one hash tag (one slot), as the registry's do
        self._history = RedisHistory(self._registry)
        self._limits: RedisLimits | None = None  # -- limits --

    def __repr__(self) -> str:
        return f"RedisResults({self.url!r})"

    def _key(self, id: str) -> bytes:
        # Bytes: an id with lone surrogates gets a key of its own instead of an error.
        return f"{self.config.prefix}:result:".encode() + id_bytes(id)

    def _translate(self) -> contextlib.AbstractContextManager[None]:
        # Unreachable or timed out: the caller may retry later; anything else will not mend.
        return translate(self.config, ResultUnavailable, ResultError)

    @property
    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise ResultError(f"redis results {self.url} are not connected; call connect()")
        return self._redis

    async def connect(self) -> None:
        """Open the connection pool and check that Redis answers.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis refused the login or failed otherwise.
        """
        if self._redis is None:
            self._redis = self.config.client(name=self.client_name)
            timeout = self.config.options.get("socket_timeout") or 10.0
            self._listener = Listener(self._redis, timeout)
        with self._translate():
            await self._client.ping()

    async def close(self) -> None:
        client, self._redis = self._redis, None
        listener, self._listener = self._listener, None
        try:
            if listener is not None:
                with contextlib.suppress(RedisError, OSError):
                    await listener.close()
        finally:
            if client is not None:
                await client.aclose()

    async def store(self, records: Sequence[ResultRecord], *, ttl: float | None) -> None:
        """Upsert ``records``, each kept ``ttl`` seconds, by the store rule.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise, or ``connect()`` was not called.
        """
        await self.store_unless(records, ttl=ttl, unless=frozenset())

    async def store_unless(self, records: Sequence[ResultRecord], *, ttl: float | None,
                           unless: frozenset[State]) -> list[str]:
        """``store``, skipping ids whose live record is in one of ``unless``'s states.

        Raises:
            The same as ``store``.
        """
        if not records:
            return []
        keep = [state.value for state in sorted(unless)]
        now = self.clock.time()
        expires_at = "" if ttl is None else repr(now + ttl)
        ttl_ms = "" if ttl is None else str(max(1, math.ceil(ttl * 1000)))
        common = (expires_at, ttl_ms, repr(now), len(keep), *keep)
        rows = [(self._key(r.id), (r.state.value, encode_record(r),
                                   "1" if r.state in READY_STATES else "0")) for r in records]
        with_history = self.history_ttl is not None and self.config.mode != "cluster"
        calls = []
        for start, chunk in self._chunks(rows):
            keys: tuple[bytes, ...] = tuple(key for key, _ in chunk)
            args = [*common, *(part for _, parts in chunk for part in parts)]
            if with_history and self.history_ttl is not None:  # its rows in the same call
                history_keys, history_args = self._history.args(
                    records[start:start + len(chunk)], now, self.history_ttl)
                keys, args = keys + history_keys, args + history_args
            calls.append((len(keys), *keys, *args))
        with self._translate():
            replies = await self._eval_all(STORE_WITH_HISTORY if with_history else STORE,
                                           calls)
            written = [done for reply in replies for done in reply]
            stored = [r for r, done in zip(records, written, strict=True) if done]
            if with_history and self.history_ttl is not None:
                await self._history.sweep(self._client, now, self.history_ttl)
            else:
                await self._write_history(stored, now)  # on a cluster: the history's slot
            return [r.id for r in stored]

    def _chunks(self, items: list[Any]) -> list[tuple[int, list[Any]]]:
        """``items`` in calls of one script, each with where it starts: one each on a
        cluster (keys of one slot), else up to :data:`_PER_CALL`."""
        size = 1 if self.config.mode == "cluster" else _PER_CALL
        return [(i, items[i:i + size]) for i in range(0, len(items), size)]

    async def _eval_all(self, source: str, calls: list[tuple[Any, ...]]) -> list[Any]:
        """Run the script ``source`` once per call (numkeys, keys of one slot, args): one
        round trip, or concurrent calls on a cluster (:func:`hubbub._redis_scripts.eval_each`).

        On one Redis the calls are packed here and sent on a pooled connection
        (:func:`hubbub._redis_wire.exchange`): redis-py's pipeline encodes each
        argument through several layers, and a worker's flush of a thousand records with
        their history has ten thousand arguments, which cost more CPU than the round trip.
        """
        if self.config.mode == "cluster":
            return await eval_each(self._client, source, calls, cluster=True)
        head = b"$7\r\nEVALSHA\r\n" + bulk(sha_of(source))
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in (1, 2):
            packed = b"".join(command(len(calls[i]) + 2, head + bulk(*calls[i])) for i in todo)
            missing = []
            for i, reply in zip(todo, await exchange(self._client, packed, len(todo)),
                                strict=True):
                if isinstance(reply, NoScriptError) and attempt == 1:
                    missing.append(i)  # Redis forgot the script: this call did not run
                elif isinstance(reply, BaseException):
                    raise reply
                else:
                    replies[i] = reply
            if not missing:
                break
            await self._client.script_load(source)
            todo = missing
        return replies

    async def get(self, ids: Sequence[str]) -> dict[str, ResultRecord]:
        """The live records among ``ids``.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise, or ``connect()`` was not called.
        """
        if not ids:
            return {}
        keys = [self._key(i) for i in ids]
        with self._translate():
            if self.config.mode == "cluster":  # a pipeline of reads may span slots
                pipe = self._client.pipeline(transaction=False)
                for key in keys:
                    pipe.hmget(key, ["record", "expires_at"])
                replies = await pipe.execute()
            else:  # one script call per 1,000 keys: far less to pack and parse
                calls = [(len(chunk), *chunk) for _, chunk in self._chunks(keys)]
                replies = [row for reply in await self._eval_all(READ, calls) for row in reply]
        now = self.clock.time()
        found = {}
        for id_, (data, expires_at) in zip(ids, replies, strict=True):
            if data is not None and (not expires_at or float(expires_at) > now):
                record = decode_record(data)
                if record.id != id_:  # stored with its surrogates escaped
                    record = dataclasses.replace(record, id=id_)
                found[id_] = record
        return found

    async def wait(self, id: str, *, timeout: float | None) -> ResultRecord | None:
        """Wait for the record to be ready, woken by Redis pub/sub rather than polling.

        Returns:
            The ready record, or None once ``timeout`` seconds passed.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise, or ``connect()`` was not called.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self._listener is None:
            raise ResultError(f"redis results {self.url} are not connected; call connect()")
        with self._translate():
            async with self._listener.watch(self._key(id)) as notice:
                while True:
                    notice.clear()
                    record = (await self.get([id])).get(id)
                    if record is not None and record.ready:
                        return record
                    remaining = _RECHECK if deadline is None else deadline - loop.time()
                    if remaining <= 0:
                        return None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(notice.wait(), min(remaining, _RECHECK))

    async def forget(self, ids: Sequence[str]) -> None:
        """Delete the records of ``ids``.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise, or ``connect()`` was not called.
        """
        if not ids:
            return
        pipe = self._client.pipeline(transaction=False)
        for id_ in ids:
            pipe.execute_command("UNLINK", self._key(id_))  # one key: any topology
        with self._translate():
            await pipe.execute()

    @property
    def _registry(self) -> str:
        # The registry's keys change together (one MULTI): on a cluster they share a slot.
        prefix = self.config.prefix
        return f"{{{prefix}}}" if self.config.mode == "cluster" else prefix

    def _worker_key(self, name: str) -> bytes:
        return f"{self._registry}:worker:".encode() + id_bytes(name)

    @property
    def _index(self) -> bytes:
        return f"{self._registry}:workers".encode()

    async def heartbeat(self, name: str, info: dict[str, Any], *, ttl: float) -> None:
        """Write worker ``name``'s entry with a PEXPIRE of ``ttl`` and index its name.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise, or ``connect()`` was not called.
        """
        expires_at = self.clock.time() + ttl
        pipe = self._client.pipeline(transaction=True)
        pipe.set(self._worker_key(name), encode_entry(info), px=max(1, math.ceil(ttl * 1000)))
        pipe.zadd(self._index, {id_bytes(name): expires_at})
        with self._translate():
            await pipe.execute()

    async def workers(self) -> dict[str, dict[str, Any]]:
        """The live entries; names whose entry expired leave the index here.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise, or ``connect()`` was not called.
        """
        with self._translate():
            await self._client.zremrangebyscore(self._index, "-inf", self.clock.time())
            listed: list[Any] = await self._client.zrange(self._index, 0, -1)
            names = [n if isinstance(n, bytes) else str(n).encode() for n in listed]
            if not names:
                return {}
            keys = [self._worker_key(n.decode("utf-8", "surrogatepass")) for n in names]
            entries = await self._client.mget(keys)
            gone = [n for n, data in zip(names, entries, strict=True) if data is None]
            if gone:  # expired by Redis before the index noticed (clocks differ)
                await self._client.zrem(self._index, *gone)
        found = {}
        for raw, data in zip(names, entries, strict=True):
            info = None if data is None else decode_entry(data)
            if info is not None:
                found[raw.decode("utf-8", "surrogatepass")] = info
        return found

    async def forget_worker(self, name: str) -> None:
        """Delete worker ``name``'s entry and its place in the index.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise, or ``connect()`` was not called.
        """
        pipe = self._client.pipeline(transaction=True)
        pipe.execute_command("UNLINK", self._worker_key(name))
        pipe.zrem(self._index, id_bytes(name))
        with self._translate():
            await pipe.execute()

    # -- history --------------------------------------------------------------------------
    # Kept in hubbub.results._redis_history (the keys and scripts are described there).

    async def _write_history(self, records: Sequence[ResultRecord], now: float) -> None:
        if self.history_ttl is not None:
            await self._history.write(self._client, records, now, self.history_ttl)

    async def search_history(self, query: HistoryQuery) -> list[HistoryRow]:
        """The rows matching ``query``, newest first.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise, or ``connect()`` was not called.
        """
        floor = None if self.history_ttl is None else self.clock.time() - self.history_ttl
        with self._translate():
            return await self._history.search(self._client, query, floor)

    async def prune_history(self, before: float) -> None:
        """Delete the rows last changed before ``before``.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise, or ``connect()`` was not called.
        """
        with self._translate():
            await self._history.prune(self._client, before)

    async def history_detail(self, id: str) -> HistoryDetail:
        """Task ``id``'s note, attempts and retry link.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise, or ``connect()`` was not called.
        """
        if self.history_ttl is None:
            return HistoryDetail()
        with self._translate():
            return await self._history.detail(self._client, id)

    async def link_retry(self, id: str, retry: str) -> None:
        """Keep the link from ``id`` to its retry as long as a history row.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise, or ``connect()`` was not called.
        """
        if self.history_ttl is None:
            return
        with self._translate():
            await self._history.link_retry(self._client, id, retry, self.history_ttl)

    # -- limits (hubbub.limits) -------------------------------------------------------------

    def limits(self) -> RedisLimits:
        if self._limits is None:
            self._limits = RedisLimits(lambda: self._client, self.config.prefix, self._translate,
                                       cluster=self.config.mode == "cluster")
        return self._limits

    # -- canvas: a chord is a hash of member id -> value (HSETNX, HLEN in one script) and a
    # hash of flags, under one hash tag; a group's member ids are one JSON string --------------

    def _chord_keys(self, chord: str) -> tuple[bytes, bytes]:
        tag = b"{" + id_bytes(chord) + b"}"
        prefix = self.config.prefix.encode()
        return prefix + b":chord:" + tag, prefix + b":chordflags:" + tag

    @staticmethod
    def _ttl_ms(ttl: float | None) -> str:
        return "" if ttl is None else str(max(1, math.ceil(ttl * 1000)))

    async def chord_join(self, members: Sequence[ChordMember], *, ttl: float | None
                         ) -> list[ChordJoin]:
        """Join the members of each chord with one Lua call on that chord's keys (one slot),
        every chord in one round trip (on a cluster, one call per chord, concurrently).

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise, or ``connect()`` was not called.
        """
        if not members:
            return []
        by_chord: dict[str, list[int]] = {}
        for i, m in enumerate(members):
            by_chord.setdefault(m.chord, []).append(i)
        calls = []
        for chord, indexes in by_chord.items():
            pairs = [part for i in indexes for part in (
                id_bytes(members[i].member), encode_value(members[i].index, members[i].value))]
            calls.append((2, *self._chord_keys(chord), self._ttl_ms(ttl), *pairs))
        with self._translate():
            replies = await self._eval_all(JOIN, calls)
        joins: list[ChordJoin | None] = [None] * len(members)
        for indexes, reply in zip(by_chord.values(), replies, strict=True):
            fired = bool(reply[-1])
            for n, i in enumerate(indexes):
                joins[i] = ChordJoin(int(reply[2 * n + 1]), bool(reply[2 * n]), fired)
        return [j for j in joins if j is not None]

    async def chord_values(self, chord: str) -> list[Any]:
        """The members' values in header order.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise, or a value cannot be decoded.
        """
        with self._translate():
            stored = await self._client.hvals(self._chord_keys(chord)[0])
        return decode_values(stored)

    async def chord_mark(self, chord: str, flag: str, *, ttl: float | None) -> bool:
        """HSETNX of ``flag`` and the flags' expiry, in one Lua call on one key.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise.
        """
        with self._translate():
            [set_it] = await self._eval_all(MARK, [(1, self._chord_keys(chord)[1], flag,
                                                     self._ttl_ms(ttl))])
        return bool(set_it)

    def _group_key(self, group: str) -> bytes:
        return f"{self.config.prefix}:group:".encode() + id_bytes(group)

    async def save_group(self, group: str, ids: Sequence[str], *, ttl: float | None) -> None:
        """SET of the members' ids as JSON, with ``ttl``.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise.
        """
        px = None if ttl is None else max(1, math.ceil(ttl * 1000))
        with self._translate():
            await self._client.set(self._group_key(group), json_dumps(list(ids)), px=px)

    async def read_group(self, group: str) -> list[str] | None:
        """The saved ids, or None.

        Raises:
            ResultUnavailable: Redis cannot be reached or did not answer in time.
            ResultError: Redis failed otherwise.
        """
        with self._translate():
            data = await self._client.get(self._group_key(group))
        if data is None:
            return None
        ids = json_loads(data if isinstance(data, bytes) else str(data).encode())
        return [str(i) for i in ids] if isinstance(ids, list) else None
