"""Redis broker: ``redis://[:password@]host:port/db?prefix=hubbub`` (``rediss://`` for TLS),
``redis+cluster://host:port,...`` for a Redis Cluster, ``redis+sentinel://host:port,.../name``
for a master the sentinels watch (docs/scaling.md).

One stream per queue and priority level, each with one consumer group; every transport
instance is a consumer of its own. The layout and the lease model are in ``docs/redis.md``.

Every multi-step change is one Lua script on one queue's keys; the scripts, the key order
they expect and the invariants they keep are in :mod:`hubbub.transports._redis_lua`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError
from redis.typing import KeyT, StreamIdT

from hubbub._redis import RedisURL, translate
from hubbub._redis_scripts import sha_of
from hubbub._redis_wire import bulk, command, evalsha, exchange
from hubbub._text import cap, clean_text
from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.errors import TransportError
from hubbub.transports._dead import DeadFilter, retention_of
from hubbub.transports._dead import dropped as log_dropped
from hubbub.transports._redis_lua import (
    CHUNK,
    GROUP,
    LEVELS,
    SCAN,
    SCRIPTS,
    QueueKeys,
    chunks,
    pack_receipts,
    publish_argv,
)
from hubbub.transports._safe import bytes_of, check_queue, due_at, text_of
from hubbub.transports.base import (
    Capabilities,
    DeadLetter,
    DeadLetterRequest,
    Delivery,
    Outgoing,
    QueueStats,
    SyncPublisher,
    Transport,
)

if TYPE_CHECKING:
    from hubbub.transports._redis_sync import RedisSyncPublisher


def _seconds(raw: object) -> float:
    try:
        return float(text_of(raw, "0"))
    except ValueError:
        return 0.0


class RedisTransport(Transport):
    """Streams + consumer groups per queue and priority; leases and delays in sorted sets.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db][?prefix=hubbub&socket_timeout=10]``;
            ``rediss://`` adds TLS options ``ssl_cert_reqs``, ``ssl_ca_certs``,
            ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``.
            ``dead_ttl`` and ``dead_max`` override the keywords below.
        clock: the clock for leases and ETAs (all hosts must agree on the time).
        dead_ttl: seconds a dead letter is kept (default 7 days).
        dead_max: dead letters kept per queue, oldest dropped first (default 10,000).

    Raises:
        ConfigurationError: the URL is malformed or has an unknown option.
    """

    capabilities: Capabilities = Capabilities(max_message_size=512 * 1024 * 1024)

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK, dead_ttl: float | None = None,
                 dead_max: int | None = None) -> None:
        url, self.retention = retention_of(url, dead_ttl, dead_max)
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
        self._shas = {name: sha_of(text) for name, text in SCRIPTS.items()}
        self._keys: dict[str, list[str]] = {}  # queue -> QueueKeys.lua(), see _lua_keys
        self._heads: dict[str, tuple[bytes, tuple[int, bytes]]] = {}  # see _packed
        self._script_heads: dict[tuple[str, str], tuple[int, bytes]] = {}  # see _evalsha
        self._known: set[str] = set()  # queues this instance registered
        self._consumed: set[str] = set()  # queues this instance is a consumer of
        self._sync: RedisSyncPublisher | None = None

    def __repr__(self) -> str:
        return f"RedisTransport({self.url!r})"

    @property
    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise TransportError(f"redis transport {self.url} is not connected; call connect()")
        return self._redis

    def _lua_keys(self, queue: str) -> list[str]:
        """``queue``'s keys in the scripts' order, built once per queue."""
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = QueueKeys.of(self.config.prefix, queue).lua()
        return keys

    async def _run(self, script: str, queue: str, args: Sequence[Any]) -> Any:
        return await self._scripts[script](keys=self._lua_keys(queue), args=[GROUP, *args])

    async def connect(self) -> None:
        if self._redis is None:
            self._redis = self.config.client(name=self.client_name)
            self._scripts = {name: self._redis.register_script(text)
                             for name, text in SCRIPTS.items()}
        with translate(self.config):
            await self._client.ping()

    def sync_publisher(self) -> SyncPublisher | None:
        """Publishes with a thread-safe sync client; None on a cluster or sentinel URL and
        with ``?wait_replicas`` (those publish on the event loop)."""
        if self._sync is None and self._redis is not None:
            # Here, not at the top: a worker that never publishes from a plain thread never
            # loads the sync client's publisher (issue #18).
            from hubbub.transports._redis_sync import RedisSyncPublisher

            client = self.config.sync_client(name=self.client_name)
            self._sync = None if client is None else RedisSyncPublisher(self, client)
        return self._sync

    async def close(self) -> None:
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()
        client, self._redis = self._redis, None
        if client is None:
            return
        try:
            with contextlib.suppress(RedisError, OSError):
                for queue in self._consumed:
                    keys = QueueKeys.of(self.config.prefix, queue).lua()
                    await self._scripts["retire"](keys=keys, args=[GROUP, self.consumer])
        finally:
            await client.aclose()

    async def publish(self, items: Sequence[Outgoing]) -> None:
        if not items:
            return
        if len(items) == 1 and items[0].queue in self._known:
            item = items[0]  # one message due now: one XADD, as RedisSyncPublisher._xadd
            if due_at(item.eta, self.clock.time()) is None:
                check_queue(item)
                stream = QueueKeys.of(self.config.prefix, item.queue).ready[
                    min(max(item.priority, 0), LEVELS - 1)]
                with translate(self.config):
                    await self._client.xadd(stream, {"id": clean_text(item.id),
                                                     "body": item.body})
                    await self._replicated(item.queue)
                return
        by_queue = publish_argv(items, self.clock.time())
        with translate(self.config):
            new = set(by_queue) - self._known
            if new:
                await self._client.sadd(f"{self.config.prefix}:queues", *sorted(new))
                self._known |= new
            await asyncio.gather(*(self._publish(q, flat) for q, flat in by_queue.items()))

    async def _publish(self, queue: str, flat: list[Any]) -> None:
        for chunk in chunks(flat, 4 * CHUNK):  # one after another: FIFO across chunks
            await self._run("publish", queue, chunk)
        await self._replicated(queue)

    async def _replicated(self, queue: str) -> None:
        """With ``?wait_replicas=N``, return once N replicas have the queue's writes."""
        await self.config.replicated(self._client, QueueKeys.of(self.config.prefix, queue).sync)

    async def fetch(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        names = list(dict.fromkeys(queues))
        if limit <= 0 or not names:
            return []
        self._consumed.update(names)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        # One queue on one server: the claim rides behind the XREAD (``_block_then_claim``).
        ride = len(names) == 1 and self.config.mode != "cluster"
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
                if not ride:
                    await self._block(cursors, max(1, int(remaining * 1000)))
                    continue
                got = await self._block_then_claim(names[0], cursors[0], limit, lease,
                                                   max(1, int(min(remaining, lease / 4) * 1000)))
                if got or deadline - loop.time() <= 0:  # the next fetch claims first anyway
                    return got

    async def _block_then_claim(self, queue: str, cursors: dict[KeyT, StreamIdT], limit: int,
                                lease: float, ms: int) -> list[Delivery]:
        """XREAD BLOCK on ``queue``'s streams with the claim script queued right behind it on
        the same connection: Redis runs the claim the moment the XREAD returns, so a message
        that arrives reaches this worker in the XREAD's own round trip instead of one more.

        The claim's ``now`` is when it was sent, up to ``ms`` before it runs: it moves no
        delayed message and takes back no lease that came due meanwhile (the caller's next
        claim does), and the leases it hands out end up to ``ms`` early, which the caller
        keeps under a quarter of the lease (renewal comes every third of it).
        """
        now = self.clock.time()
        until = now + lease
        streams, claim = self._packed(queue)
        packed = (command(6 + 2 * len(cursors), bulk("XREAD", "COUNT", 1, "BLOCK", ms, "STREAMS")
                          + streams + bulk(*map(str, cursors.values())))
                  + command(claim[0] + 3, claim[1] + bulk(now, until, limit)))
        woke, reply = await exchange(self._client, packed, 2)
        if isinstance(reply, NoScriptError):  # Redis forgot it: the caller's claim loads it
            return []
        for result in (woke, reply):
            if isinstance(result, BaseException):
                raise result
        return self._deliveries(queue, reply[0], until)

    async def _evalsha(self, script: str, queue: str, args: list[Any],
                       head: tuple[int, bytes] | None = None, fixed: Sequence[Any] = ()) -> Any:
        """``script``'s reply on ``queue`` with ``args`` after the group: packed here behind
        a head built once per script and queue (or ``head``, which holds the group and
        ``fixed`` after it), except on a cluster, whose client routes by key."""
        if self.config.mode != "cluster":
            head = head or self._script_heads.get((script, queue))
            if head is None:
                keys = self._lua_keys(queue)
                parts: list[str | int] = ["EVALSHA", self._shas[script], len(keys), *keys, GROUP]
                head = self._script_heads[script, queue] = (len(parts), bulk(*parts))
            reply = await evalsha(self._client, head, args)
            if not isinstance(reply, NoScriptError):  # else the Script object loads it
                return reply
        return await self._run(script, queue, [*fixed, *args])

    def _packed(self, queue: str) -> tuple[bytes, tuple[int, bytes]]:
        """``queue``'s XREAD keys (ready streams by priority, then wake) and the claim
        script's head (its argument count and ``EVALSHA sha numkeys keys group consumer``),
        packed once per queue."""
        packed = self._heads.get(queue)
        if packed is None:
            keys = self._lua_keys(queue)
            head: list[str | int] = ["EVALSHA", self._shas["claim"], len(keys), *keys, GROUP,
                                     self.consumer]
            packed = self._heads[queue] = (bulk(*keys[:LEVELS], keys[14]),
                                           (len(head), bulk(*head)))
        return packed

    async def _block(self, cursors: list[dict[KeyT, StreamIdT]], ms: int) -> None:
        """XREAD BLOCK until one of the queues' streams gets an entry (or ``ms`` pass).

        One XREAD covers every queue on one server. A cluster refuses keys of several slots
        in one command: there each queue blocks on its own and the first to wake wins.
        """
        if self.config.mode != "cluster" or len(cursors) == 1:
            merged = {k: v for c in cursors for k, v in c.items()}
            await self._client.xread(merged, count=1, block=ms)
            return
        reads = [asyncio.ensure_future(self._client.xread(c, count=1, block=ms))
                 for c in cursors]
        try:
            done, _ = await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
            for read in done:
                read.result()  # raise its error, if any
        finally:
            for read in reads:
                read.cancel()
            await asyncio.gather(*reads, return_exceptions=True)

    async def _claim(
        self, names: list[str], limit: int, lease: float
    ) -> tuple[list[Delivery], list[dict[KeyT, StreamIdT]], float | None]:
        """One pass over the queues. Cursors (per queue) and the next due time matter only
        if nothing was claimed."""
        now = self.clock.time()
        until = now + lease
        got: list[Delivery] = []
        cursors: list[dict[KeyT, StreamIdT]] = []
        due: float | None = None
        for queue in names:
            reply = await self._evalsha("claim", queue, [repr(now), repr(until),
                                                         limit - len(got)],
                                        self._packed(queue)[1], [self.consumer])
            got += self._deliveries(queue, reply[0], until)
            if len(got) >= limit:
                break
            if len(reply) > 1:
                keys = QueueKeys.of(self.config.prefix, queue)
                # the claim script's cursors: each ready stream by priority, then wake
                cursors.append(dict(zip([*keys.ready, keys.wake],
                                        (c.decode() for c in reply[1]), strict=True)))
                for score in reply[2]:
                    if score:
                        due = float(score) if due is None else min(due, float(score))
        return got, cursors, due

    def _deliveries(self, queue: str, rows: list[Any], until: float) -> list[Delivery]:
        """The claim script's rows as deliveries leased until ``until``."""
        got = []
        for priority, entry_id, id_, body, attempts in rows:
            # id_ and body are None when another tool wrote the entry without them.
            eid = entry_id.decode()
            receipt = (int(priority), eid, str(attempts))
            got.append(Delivery(queue, bytes_of(body), text_of(id_) or f"redis-{eid}",
                                int(attempts), int(priority), receipt=receipt,
                                lease_until=until))
        return got

    async def _each_queue(
        self, script: str, deliveries: Sequence[Any], head: Sequence[Any],
        tail: Callable[[Sequence[Any]], list[Any]] = lambda _: [],
    ) -> list[Any]:
        """Run ``script`` over ``deliveries``: queues at once, chunks of one queue in order;
        its arguments are ``head``, the chunk's receipts packed in one, then ``tail(chunk)``.

        Returns:
            ``(chunk, reply)`` pairs.
        """
        by_queue: dict[str, list[Any]] = {}
        for d in deliveries:
            by_queue.setdefault(d.delivery.queue if isinstance(d, DeadLetterRequest)
                                else d.queue, []).append(d)

        async def one_queue(queue: str, items: list[Any]) -> list[tuple[Sequence[Any], Any]]:
            return [(chunk, await self._evalsha(script, queue, [
                *head, pack_receipts([d.delivery.receipt if isinstance(d, DeadLetterRequest)
                                      else d.receipt for d in chunk]), *tail(chunk)]))
                    for chunk in chunks(items)]

        with translate(self.config):
            if len(by_queue) == 1:  # the usual batch: one queue, awaited without a task
                [(queue, items)] = by_queue.items()
                return await one_queue(queue, items)
            done = await asyncio.gather(*(one_queue(q, ds) for q, ds in by_queue.items()))
        return [pair for pairs in done for pair in pairs]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self._each_queue("ack", deliveries, [])
        if self.config.wait_replicas:
            with translate(self.config):
                await asyncio.gather(*(self._replicated(q)
                                       for q in {d.queue for d in deliveries}))

    async def release(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        at = repr(self.clock.time() + delay) if delay > 0 else ""
        await self._each_queue("release", deliveries, [at])

    async def dead_letter(self, requests: Sequence[DeadLetterRequest]) -> None:
        now = self.clock.time()
        head = [repr(now), repr(self.retention.cutoff(now)), self.retention.limit]
        results = await self._each_queue("dead", requests, head,
                                         lambda chunk: [cap(r.reason) for r in chunk])
        for chunk, (expired, over) in results:
            queue = chunk[0].delivery.queue
            log_dropped(queue, int(over), f"over the cap of {self.retention.limit}, oldest first")
            log_dropped(queue, int(expired),
                        f"older than the retention of {self.retention.ttl:g}s")

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        now = self.clock.time()
        until = now + lease
        lost: list[Delivery] = []
        results = await self._each_queue(
            "extend", deliveries, [self.consumer, repr(now), repr(until)])
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
                    n, last = await self._run("purge", queue, [now, priority, start, SCAN])
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
            keys = QueueKeys.of(self.config.prefix, queue)
            for stream in keys.ready:
                pipe.xlen(stream)
            pipe.zcard(keys.leases)
            pipe.zcount(keys.leases, "-inf", now)
            pipe.zcard(keys.delayed)
            pipe.zcount(keys.delayed, "-inf", now)
            pipe.xlen(keys.dead)
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

    async def list_dead(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        names = await self._queues() if queue is None else [queue]
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.xrange(QueueKeys.of(self.config.prefix, name).dead, count=limit)
        with translate(self.config):
            replies = await pipe.execute()
        found = []
        cutoff = self.retention.cutoff(self.clock.time())
        for name, entries in zip(names, replies, strict=True):
            for eid, f in entries:
                if _seconds(f.get(b"at")) < cutoff:
                    continue  # past the retention: the next dead letter of the queue drops it
                found.append(DeadLetter(text_of(f.get(b"id")) or f"redis-{text_of(eid)}", name,
                                        bytes_of(f.get(b"body")), text_of(f.get(b"reason")),
                                        _seconds(f.get(b"at"))))
        found.sort(key=lambda d: d.died_at)  # stable: per queue the stream order stays
        return found[:limit]

    async def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        if ids is not None and not ids:
            return 0
        head = ["1" if ids is None else "0"]
        ids = None if ids is None else [clean_text(i) for i in ids]
        total = 0
        with translate(self.config):
            for queue in await self._queues():
                start = "-"
                while True:
                    n, last = await self._run("requeue", queue,
                                              [*head, start, SCAN, *(ids or ())])
                    total += int(n)
                    if not last:
                        break
                    start = "(" + last.decode()
        return total

    async def _drop_dead(self, queues: Sequence[str],
                         doomed: Callable[[str, dict[bytes, Any]], bool]) -> int:
        """XDEL the dead letters of ``queues`` for which ``doomed(queue, fields)`` holds,
        reading each stream in chunks; returns how many were deleted."""
        total = 0
        with translate(self.config):
            for queue in queues:
                key, start = QueueKeys.of(self.config.prefix, queue).dead, "-"
                while True:
                    entries: list[Any] = await self._client.xrange(key, start, "+",
                                                                    count=CHUNK) or []
                    # an entry another tool wrote may lack fields: {} never matches an id
                    gone = [eid for eid, f in entries if doomed(queue, f or {})]
                    if gone:
                        total += int(await self._client.xdel(key, *gone))
                    if len(entries) < CHUNK:
                        break
                    start = "(" + text_of(entries[-1][0])
        return total

    async def delete_dead(self, ids: Sequence[str]) -> int:
        wanted = {clean_text(i) for i in ids}
        if not wanted:
            return 0
        return await self._drop_dead(await self._queues(),
                                     lambda _q, f: text_of(f.get(b"id")) in wanted)

    async def purge_dead(self, *, older_than: float | None = None, task: str | None = None,
                         queue: str | None = None) -> int:
        match = DeadFilter(older_than, task, queue)
        now = self.clock.time()
        names = await self._queues() if queue is None else [queue]
        return await self._drop_dead(
            names, lambda q, f: match.matches(q, _seconds(f.get(b"at")), now, f.get(b"body")))
