"""RabbitMQ over AMQP 0-9-1: ``amqp://user:pass@host:5672/vhost?prefix=hubbub``.

Durable priority queues, persistent messages, publisher confirms, manual acks and a prefetch
tied to the fetch limit. Leases belong to the channel (RabbitMQ gives unacked deliveries back
when it closes). Attempts are counted in a ``hubbub-attempts`` header: a delivery flagged
``redelivered`` is published again with the count raised before anyone runs it. Delays use
a binary cascade of per-queue TTL queues dead-lettering into one another, no plugin. Dead
letters go to a queue per queue with the reason in headers. AMQP cannot list queues, so the
queues a prefix creates are recorded in ``<prefix>:queues``. See docs/amqp.md.

The connection and its failover are in ``_amqp_link``, the queues' declaration and publishing
in ``_amqp_queues``, the dead-letter queues in ``_amqp_dead``, names and the delay cascade in
``_amqp_topology``; this module holds the consuming channel's leases and the Transport methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import ChannelInvalidStateError

from hubbub._redact import redact
from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.errors import ConfigurationError, HubbubError, MessageRejectedByBroker
from hubbub.transports._amqp_dead import DeadQueues
from hubbub.transports._amqp_link import UNAVAILABLE, Link, confirm
from hubbub.transports._amqp_queues import Queues
from hubbub.transports._amqp_sync import HAVE_CLIENT, AMQPSyncPublisher, direct
from hubbub.transports._amqp_topology import (
    H_ATTEMPTS,
    H_DIED,
    H_ETA,
    H_REASON,
    H_RETURNS,
    MAX_PRIORITY,
    QUEUE_TYPES,
    build_message,
    check_prefix,
    dead_letter_of,
    level_names,
    main_name,
    parse_urls,
    ready_counts,
    seconds,
    short_id,
)
from hubbub.transports._dead import DeadFilter, retention_of
from hubbub.transports._dead import dropped as log_dropped
from hubbub.transports._safe import check_queue, count_of
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


class AMQPTransport(Transport):
    """RabbitMQ queues with publisher confirms, manual acks and connection-bound leases.

    Args:
        url: one ``amqp://`` / ``amqps://`` URL, or several separated by ';' or ',' for a
            cluster (tried in turn, with backoff). Query options: ``prefix`` (namespace of
            every queue and exchange; default ``hubbub``), ``connect_timeout`` (seconds to
            keep trying the URLs; default 10), ``publish_timeout`` (seconds a publish,
            release or dead letter may take, reconnecting and confirms included; default
            30), ``consumer_timeout`` (seconds; see docs/amqp.md), ``queue_type``
            (``classic``, the default, or ``quorum``: replicated over a cluster's nodes, no
            priorities on RabbitMQ 3.x; see docs/scaling.md), ``delivery_limit`` (quorum
            only: the broker dead-letters a message handed out more often). Other query
            options go
            to the driver (e.g. ``heartbeat``). ``dead_ttl`` and ``dead_max`` override the
            keywords below.
        clock: the source of wall time for ETAs.
        dead_ttl: seconds a dead letter is kept (default 7 days; RabbitMQ's ``x-message-ttl``
            of the dead-letter queue, at most about 49 days).
        dead_max: dead letters kept per queue, oldest dropped first (default 10,000;
            ``x-max-length`` with ``x-overflow: drop-head``).

    Raises:
        ConfigurationError: the URL or an option is malformed.
    """

    capabilities: Capabilities = Capabilities(
        max_priority=MAX_PRIORITY, connection_bound_lease=True
    )

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK, dead_ttl: float | None = None,
                 dead_max: int | None = None) -> None:
        url, self.retention = retention_of(url, dead_ttl, dead_max)
        urls, options = parse_urls(url)
        self.url = redact(url)
        self.prefix = check_prefix(options.get("prefix", "hubbub"))
        try:
            self.connect_timeout = float(options.get("connect_timeout", "10"))
            self.publish_timeout = float(options.get("publish_timeout", "30"))
            limit = options.get("delivery_limit")
            delivery_limit = None if limit is None else int(limit)
            timeout = options.get("consumer_timeout")
            self._consumer_args: dict[str, Any] | None = (
                None if timeout is None else {"x-consumer-timeout": round(float(timeout) * 1000)}
            )
        except ValueError as exc:
            raise ConfigurationError(f"bad option in AMQP URL {self.url!r}: {exc}") from exc
        self.queue_type = options.get("queue_type", "classic")
        if self.queue_type not in QUEUE_TYPES:
            raise ConfigurationError(f"queue_type must be classic or quorum, not "
                                     f"{self.queue_type!r}, in {self.url!r}")
        if delivery_limit is not None and (self.queue_type != "quorum" or delivery_limit < 1):
            raise ConfigurationError(f"delivery_limit needs queue_type=quorum and a number of 1"
                                     f" or more, in {self.url!r}")
        self.quorum = self.queue_type == "quorum"
        self.clock = clock
        self._link = Link(urls, connect_timeout=self.connect_timeout,
                          publish_timeout=self.publish_timeout, on_connect=self._queues_forget,
                          on_channel=self._forget_channel, global_qos=not self.quorum)
        self._dead = DeadQueues(self._link, self.prefix, self.retention, clock,
                                queue_type=self.queue_type)
        self._queues = Queues(self._link, self._dead, self.prefix, clock,
                              queue_type=self.queue_type, delivery_limit=delivery_limit)
        self._consumers: dict[str, tuple[AbstractQueue, str]] = {}
        self._buffer: list[tuple[str, AbstractIncomingMessage]] = []  # arrived, not handed out
        self._held: dict[int, str] = {}  # delivery tag -> queue, handed out and not settled
        self._prefetch = 0
        self._fetching = 0  # fetches in progress: they want the broker to push
        self._arrived = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # set by connect()
        self._sync: AMQPSyncPublisher | None = None
        self._sync_lock = threading.Lock()
        self._direct = HAVE_CLIENT and all(direct(u) for u in urls)

    def __repr__(self) -> str:
        return f"AMQPTransport({self.url!r})"

    @property
    def _conn(self) -> AbstractConnection | None:
        """The connection now, if any (a test closes it to cut the network)."""
        return self._link.conn

    # -- connection ----------------------------------------------------------------------

    def _queues_forget(self) -> None:
        """A new connection: every queue is declared again on first use."""
        self._queues.forget()

    def _forget_channel(self) -> None:
        """A new consuming channel: what the old one held is back in its queues."""
        self._prefetch = 1
        self._consumers.clear()
        self._buffer.clear()
        self._held.clear()

    async def connect(self) -> None:
        with self._link.guard():
            await self._link.ensure()
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        if self._link.alive() and (self._consumers or self._buffer):
            with contextlib.suppress(*UNAVAILABLE, HubbubError):
                for consumer, tag in self._consumers.values():
                    await consumer.cancel(tag)  # first, or what is given back comes back
                await self._give_back(self._buffer)  # prefetched, never handed out
        self._buffer.clear()
        self._held.clear()
        sync, self._sync, self._loop = self._sync, None, None
        if sync is not None:
            sync.close()
        await self._link.drop()

    # -- publishing ----------------------------------------------------------------------

    async def publish(self, items: Sequence[Outgoing]) -> None:
        self.check(items)
        sends = [(i.queue, build_message(i.queue, i.body, i.id, i.priority, 0), i.eta)
                 for i in items]
        with self._link.guard():
            async with self._link.bounded("publish"):
                await self._queues.send_all(sends)

    def check(self, items: Sequence[Outgoing]) -> None:
        """Refuse, before anything is sent, an item no queue here can take (the worker
        drops the one and retries the others).

        Raises:
            ConfigurationError: a priority on a quorum queue.
            MessageRejectedByBroker: a queue name AMQP cannot hold.
        """
        for i in items:
            check_queue(i)
            if self.quorum and i.priority > 0:
                raise ConfigurationError(
                    f"task {i.id} has priority {i.priority}, but queue {i.queue!r} is a quorum "
                    "queue and RabbitMQ 3.x quorum queues have no priorities: send it with "
                    "priority 0, or put it on a broker URL with queue_type=classic")
            try:
                main_name(self.prefix, i.queue)
            except ConfigurationError as exc:
                raise MessageRejectedByBroker(i.id, i.queue, str(exc)) from None

    async def prepare(self, item: Outgoing) -> None:
        """Declare what ``item`` is published into, for the sync publisher."""
        with self._link.guard():
            async with self._link.bounded("publish"):
                await self._queues.prepare(item.queue, item.eta is not None)

    def sync_publisher(self) -> SyncPublisher | None:
        """Publishes on the calling thread over one blocking connection per process that all
        threads share, their confirms pipelined (py-amqp, in the ``amqp`` extra); None before
        ``connect()``, without py-amqp, and with TLS options in the URL."""
        if self._sync is None and self._loop is not None and self._direct:
            with self._sync_lock:  # callers' threads: one publisher, not one per racing thread
                if self._sync is None:
                    self._sync = AMQPSyncPublisher(self, self._loop)
        return self._sync

    # -- consuming -----------------------------------------------------------------------

    async def _subscribe(self, queues: Sequence[str]) -> None:
        _, _, sub = await self._link.ensure()
        gone = [q for q in self._consumers if q not in queues]
        for queue in gone:
            consumer, tag = self._consumers.pop(queue)
            await consumer.cancel(tag)
        if gone:
            await self._give_back([e for e in self._buffer if e[0] in gone])
        for queue in queues:
            if queue not in self._consumers:
                consumer = await sub.get_queue(await self._queues.declare(queue), ensure=False)
                tag = await consumer.consume(self._receiver(self._link.gen, queue),
                                             arguments=self._consumer_args)
                self._consumers[queue] = (consumer, tag)

    def _receiver(self, gen: int, queue: str) -> Any:
        async def receive(message: AbstractIncomingMessage) -> None:
            if gen == self._link.gen:
                self._buffer.append((queue, message))
                self._arrived.set()

        return receive

    async def _set_prefetch(self, count: int) -> None:
        count = max(1, min(count, 65_535))
        sub = self._link.sub
        if count != self._prefetch and sub is not None and not sub.is_closed:
            # Per consumer (quorum), the count holds for the consumers subscribed after it.
            await sub.set_qos(prefetch_count=count, global_=self._link.global_qos)
            self._prefetch = count

    async def fetch(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        names = list(dict.fromkeys(queues))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        self._fetching += 1
        try:
            with self._link.guard():
                await self._link.ensure()
                await self._set_prefetch(len(self._held) + limit)
                await self._subscribe(names)
                while True:
                    self._arrived.clear()
                    got = await self._take(names, limit, lease)
                    remaining = deadline - loop.time()
                    if got or remaining <= 0:
                        return got
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), remaining)
        finally:  # hoard nothing between fetches (at least 1: 0 would mean unlimited)
            self._fetching -= 1
            with contextlib.suppress(*UNAVAILABLE):
                await self._set_prefetch(len(self._held) + len(self._buffer))

    async def _take(self, queues: Sequence[str], limit: int, lease: float) -> list[Delivery]:
        now, out = self.clock.time(), list[Delivery]()
        # Higher priority first; sorted() is stable, so arrival order within a priority.
        for entry in sorted((e for e in self._buffer if e[0] in queues),
                            key=lambda e: -(e[1].priority or 0)):
            if len(out) >= limit:
                break
            self._buffer.remove(entry)
            queue, m = entry
            headers = m.headers or {}
            # Headers another tool wrote may be anything: unreadable means "not counted"
            # (or counted once, if redelivered) and "no delay", never an exception.
            seen = count_of(headers.get(H_ATTEMPTS, 0), int(bool(m.redelivered)))
            if self.quorum:  # the broker counts returns durably (Raft): no copy needed
                seen = count_of(headers.get(H_ATTEMPTS, 0), 0) + count_of(
                    headers.get(H_RETURNS, 0), int(bool(m.redelivered)))
            eta = seconds(headers.get(H_ETA)) if H_ETA in headers else None
            if m.redelivered and not self.quorum:  # its last holder died: count that
                # delivery durably (a copy with the count raised), then look again
                await self._again(queue, m, seen + 1, None)
            elif eta is not None and eta > now + 0.01:  # early (clock skew, very long delay)
                await self._again(queue, m, seen, eta)
            else:
                self._held[m.delivery_tag or 0] = queue
                out.append(Delivery(queue, m.body, m.message_id or f"amqp-{m.delivery_tag}",
                                    seen + 1, min(max(m.priority or 0, 0), MAX_PRIORITY),
                                    receipt=(self._link.gen, m), lease_until=now + lease,
                                    headers=headers))
        return out

    async def _again(self, queue: str, m: AbstractIncomingMessage, attempts: int,
                     eta: float | None) -> None:
        """Publish a copy of ``m`` (confirmed), then ack ``m``. The copy keeps the headers
        another publisher gave ``m`` (a trace context, say); hubbub's own and the broker's
        (``x-``) are written afresh."""
        theirs = {k: v for k, v in (m.headers or {}).items()
                  if not k.startswith(("hubbub-", "x-"))}
        await self._queues.send(queue, build_message(queue, m.body, m.message_id, m.priority or 0,
                                                     attempts, **theirs), eta)
        await m.ack()

    async def _give_back(self, entries: Sequence[tuple[str, AbstractIncomingMessage]]) -> None:
        """Return prefetched messages without counting an attempt."""
        for entry in list(entries):
            queue, m = entry
            self._buffer.remove(entry)
            headers = m.headers or {}
            if not m.redelivered:  # a redelivered one is counted by its next consumer anyway
                await self._again(queue, m, count_of(headers.get(H_ATTEMPTS, 0), 0), None)

    def _live(self, d: Delivery) -> AbstractIncomingMessage | None:
        gen, message = d.receipt
        if gen != self._link.gen or not self._link.consuming():
            return None
        live: AbstractIncomingMessage | None = message
        return live if message.delivery_tag in self._held else None

    async def _settle(self, deliveries: Sequence[Delivery]) -> None:
        live = [m for m in map(self._live, deliveries) if m is not None]
        for message in live:
            self._held.pop(message.delivery_tag or 0, None)
        if live and not self._fetching:
            await self._hold_back()
        for message in live:
            with contextlib.suppress(ChannelInvalidStateError):
                await message.ack()  # a closed channel: the broker has it back already

    async def _hold_back(self) -> None:
        """Between fetches, keep the room an ack frees from being filled: lower the prefetch
        to what stays unacked, or with nothing left, cancel the consumers (prefetch 0 would
        mean unlimited). Else a stopping worker would take back what it just released and
        sit on it until it exits. The next fetch raises the prefetch and subscribes again."""
        if not self._link.consuming():
            return
        keep = len(self._held) + len(self._buffer)
        if keep:
            await self._set_prefetch(keep)
            return
        consumers, self._consumers = list(self._consumers.values()), {}
        for consumer, tag in consumers:
            await consumer.cancel(tag)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._link.guard():
            await self._settle(deliveries)

    async def release(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        live = [d for d in deliveries if self._live(d) is not None]
        eta = self.clock.time() + delay if delay > 0 else None
        with self._link.guard():
            async with self._link.bounded("release"):
                await self._queues.send_all([(d.queue, build_message(d.queue, d.body, d.id,
                                                              d.priority, d.attempts - 1), eta)
                                      for d in live])
            await self._settle(live)

    async def dead_letter(self, requests: Sequence[DeadLetterRequest]) -> None:
        live = [r for r in requests if self._live(r.delivery) is not None]
        died = repr(self.clock.time())
        with self._link.guard():
            async with self._link.bounded("dead letter"):
                conn, pub, _ = await self._link.ensure()
                queues = sorted({r.delivery.queue for r in live})
                for queue in queues:
                    await self._queues.declare(queue)
                # RabbitMQ drops past the cap itself (drop-head) and says nothing: the count
                # before the batch tells how many it dropped (about: others write too).
                before = await ready_counts(conn, [self._dead.name(q) for q in queues])
                for r in live:
                    d = r.delivery
                    message = build_message(d.queue, d.body, d.id, d.priority, d.attempts,
                                            **{H_REASON: r.reason, H_DIED: died})
                    confirm(await pub.default_exchange.publish(
                        message, routing_key=self._dead.name(d.queue)))
            await self._settle([r.delivery for r in live])
        for queue, count in zip(queues, before, strict=True):
            added = sum(1 for r in live if r.delivery.queue == queue)
            log_dropped(queue, (count or 0) + added - self.retention.limit,
                        f"over the cap of {self.retention.limit}, oldest first")

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        until = self.clock.time() + lease
        for d in deliveries:
            if self._live(d) is not None:
                d.lease_until = until
        return [d for d in deliveries if self._live(d) is None]

    # -- inspection ----------------------------------------------------------------------

    async def purge(self, queue: str) -> int:
        with self._link.guard():
            conn, _, _ = await self._link.ensure()
            # the queue and its delay levels, not its dead letters
            names = [main_name(self.prefix, queue), *level_names(self.prefix, queue)]
            existing = [n for n, c in zip(names, await self._link.counts(names), strict=True)
                        if c is not None]
            count = 0
            async with contextlib.AsyncExitStack() as stack:
                channel = await conn.channel(publisher_confirms=False)
                stack.push_async_callback(channel.close)
                for name in existing:
                    result = await (await channel.get_queue(name, ensure=False)).purge()
                    count += (result.message_count or 0) if result is not None else 0
            mine = [e for e in self._buffer if e[0] == queue]  # prefetched, not handed out
            for entry in mine:
                self._buffer.remove(entry)
                await entry[1].ack()
            return count + len(mine)

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        with self._link.guard():
            names = await self._queues.names() if queues is None else list(queues)
            out = []
            for queue in names:
                main, levels = main_name(self.prefix, queue), level_names(self.prefix, queue)
                ready, dead_count, legacy, first = await self._link.counts(
                    [main, *self._dead.names(queue), levels[0]])
                delayed = [first] + (
                    await self._link.counts(levels[1:]) if first is not None else [])
                out.append(QueueStats(
                    queue,
                    ready=(ready or 0) + sum(1 for q, _ in self._buffer if q == queue),
                    delayed=sum(c or 0 for c in delayed),
                    leased=sum(1 for q in self._held.values() if q == queue),
                    dead=(dead_count or 0) + (legacy or 0),
                ))
            return out

    async def list_dead(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        cutoff = self.retention.cutoff(self.clock.time())
        with self._link.guard():
            queues = [queue] if queue is not None else await self._queues.names()
            return await self._dead.read(queues, limit=limit, cutoff=cutoff)

    async def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        wanted = None if ids is None else {short_id(i) for i in ids}

        async def send_back(queue: str, m: AbstractIncomingMessage) -> None:
            await self._queues.send(queue, build_message(queue, m.body, m.message_id,
                                                         m.priority or 0, 0), None)

        with self._link.guard():
            queues = await self._queues.names()
        return await self._dead.take(
            queues, lambda _q, m: wanted is None or m.message_id in wanted, send_back)

    async def delete_dead(self, ids: Sequence[str]) -> int:
        wanted = {short_id(i) for i in ids}
        if not wanted:
            return 0
        with self._link.guard():
            queues = await self._queues.names()
        return await self._dead.take(queues, lambda _q, m: m.message_id in wanted)

    async def purge_dead(self, *, older_than: float | None = None, task: str | None = None,
                         queue: str | None = None) -> int:
        match, now = DeadFilter(older_than, task, queue), self.clock.time()
        with self._link.guard():
            queues = await self._queues.names() if queue is None else [queue]

        def doomed(name: str, m: AbstractIncomingMessage) -> bool:
            letter = dead_letter_of(name, m)
            return match.matches(name, letter.died_at, now, letter.body)

        return await self._dead.take(queues, doomed)
