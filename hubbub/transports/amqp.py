"""RabbitMQ over AMQP 0-9-1: ``amqp://user:pass@host:5672/vhost?prefix=hubbub``.

Durable priority queues, persistent messages, publisher confirms, manual acks and a prefetch
tied to the fetch limit. Leases belong to the channel (RabbitMQ gives unacked deliveries back
when it closes). Attempts are counted in a ``hubbub-attempts`` header: a delivery flagged
``redelivered`` is published again with the count raised before anyone runs it. Delays use
a binary cascade of per-queue TTL queues dead-lettering into one another, no plugin. Dead
letters go to a queue per queue with the reason in headers. AMQP cannot list queues, so the
queues a prefix creates are recorded in ``<prefix>:queues``. See docs/amqp.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    DeliveryMode,
)
from aio_pika.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
)
from pamqp.commands import Basic

from hubbub._redact import redact
from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.errors import (
    ConfigurationError,
    HubbubError,
    MessageRejectedByBroker,
    TransportError,
    TransportUnavailable,
)
from hubbub.transports._amqp_topology import (
    H_ATTEMPTS,
    H_DIED,
    H_ETA,
    H_REASON,
    MAX_PRIORITY,
    browse,
    build_message,
    check_prefix,
    dead_arguments,
    dead_letter_of,
    dead_name,
    declare_cascade,
    declare_levels,
    delay_route,
    delay_units,
    directory_name,
    legacy_dead_name,
    level_names,
    main_name,
    parse_urls,
    ready_counts,
    seconds,
    short_id,
)
from hubbub.transports._dead import DeadFilter, retention_of
from hubbub.transports._dead import dropped as log_dropped
from hubbub.transports._safe import check_queue, count_of, due_at
from hubbub.transports.base import (
    Capabilities,
    DeadLetter,
    DeadLetterRequest,
    Delivery,
    Outgoing,
    QueueStats,
    Transport,
)

log = logging.getLogger("hubbub.transports")
_UNAVAILABLE = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, TimeoutError)


class AMQPTransport(Transport):
    """RabbitMQ queues with publisher confirms, manual acks and connection-bound leases.

    Args:
        url: one ``amqp://`` / ``amqps://`` URL, or several separated by ';' or ',' for a
            cluster (tried in turn, with backoff). Query options: ``prefix`` (namespace of
            every queue and exchange; default ``hubbub``), ``connect_timeout`` (seconds to
            keep trying the URLs; default 10), ``publish_timeout`` (seconds a publish,
            release or dead letter may take, reconnecting and confirms included; default
            30), ``consumer_timeout`` (seconds; see docs/amqp.md). Other query options go
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
        self._urls, options = parse_urls(url)
        self.url = redact(url)
        self.prefix = check_prefix(options.get("prefix", "hubbub"))
        try:
            self.connect_timeout = float(options.get("connect_timeout", "10"))
            self.publish_timeout = float(options.get("publish_timeout", "30"))
            timeout = options.get("consumer_timeout")
            self._consumer_args: dict[str, Any] | None = (
                None if timeout is None else {"x-consumer-timeout": round(float(timeout) * 1000)}
            )
        except ValueError as exc:
            raise ConfigurationError(f"bad option in AMQP URL {self.url!r}: {exc}") from exc
        self.clock = clock
        self._conn: AbstractConnection | None = None
        self._pub: AbstractChannel | None = None  # publishes and declares, with confirms
        self._sub: AbstractChannel | None = None  # consumes and acks; its loss ends leases
        self._gen = 0  # bumps with every new consuming channel
        self._next = 0  # the URL to try first
        self._where = redact(self._urls[0])
        self._declared: set[str] = set()
        self._warned: set[str] = set()  # dead-letter queues found with other arguments
        self._delays: set[str] = set()
        self._levels = False
        self._known: set[str] | None = None
        self._consumers: dict[str, tuple[AbstractQueue, str]] = {}
        self._buffer: list[tuple[str, AbstractIncomingMessage]] = []  # arrived, not handed out
        self._held: dict[int, str] = {}  # delivery tag -> queue, handed out and not settled
        self._prefetch = 0
        self._fetching = 0  # fetches in progress: they want the broker to push
        self._arrived = asyncio.Event()
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"AMQPTransport({self.url!r})"

    # -- connection ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Translate driver errors at the boundary, passwords masked."""
        try:
            yield
        except HubbubError:
            raise
        except ChannelPreconditionFailed as exc:
            raise TransportError(
                f"RabbitMQ at {self._where} refused a declaration ({redact(str(exc))}); a queue"
                " with other arguments exists: delete it or use another prefix"
            ) from exc
        except (DeliveryError, ChannelNotFoundEntity) as exc:
            raise TransportError(f"RabbitMQ at {self._where}: {redact(str(exc))}") from exc
        except _UNAVAILABLE as exc:
            raise TransportUnavailable(
                f"RabbitMQ at {self._where}: {redact(str(exc)) or type(exc).__name__}"
            ) from exc

    @contextlib.asynccontextmanager
    async def _bounded(self, what: str) -> AsyncIterator[None]:
        """Bound a write that waits for the broker (confirms, a reconnect) by
        ``publish_timeout``: a blocked or silent broker must not hang the caller. What timed
        out may still arrive (a message is confirmed later, or never)."""
        try:
            async with asyncio.timeout(self.publish_timeout):
                yield
        except TimeoutError as exc:
            raise TransportUnavailable(
                f"RabbitMQ at {self._where} did not confirm a {what} within"
                f" {self.publish_timeout:g}s; is it reachable, and free of memory or disk alarms?"
            ) from exc

    def _alive(self) -> bool:
        return not (self._conn is None or self._conn.is_closed
                    or self._pub is None or self._pub.is_closed)

    async def _ensure(self) -> tuple[AbstractConnection, AbstractChannel, AbstractChannel]:
        """The connection and both channels, reconnecting (next URL, backoff) if needed."""
        if not self._alive() or self._sub is None or self._sub.is_closed:
            async with self._lock:
                if not self._alive():
                    await self._reconnect()
                assert self._conn is not None
                if self._sub is None or self._sub.is_closed:
                    self._gen += 1  # deliveries of the old channel are back in their queues
                    self._sub = await self._conn.channel(publisher_confirms=False)
                    await self._sub.set_qos(prefetch_count=1, global_=True)  # before consuming
                    self._prefetch = 1
                    self._consumers.clear()
                    self._buffer.clear()
                    self._held.clear()
        assert self._conn is not None
        assert self._pub is not None
        assert self._sub is not None
        return self._conn, self._pub, self._sub

    async def _reconnect(self) -> None:
        await self._drop()
        loop = asyncio.get_running_loop()
        deadline, pause, failures = loop.time() + self.connect_timeout, 0.05, []
        while True:
            url = self._urls[self._next % len(self._urls)]
            self._where = redact(url)
            try:
                budget = max(0.5, deadline - loop.time())
                conn = await aio_pika.connect(url, timeout=min(budget, 5.0))
                break
            except _UNAVAILABLE as exc:
                failures.append(f"{self._where}: {redact(str(exc)) or type(exc).__name__}")
                self._next += 1
            if self._next % len(self._urls) == 0:  # a full round failed: back off
                if loop.time() + pause > deadline:
                    raise TransportUnavailable(
                        f"RabbitMQ cannot be reached ({'; '.join(failures[-len(self._urls):])});"
                        " is it running and are the credentials right?"
                    )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
        self._conn = conn
        self._pub = await conn.channel(publisher_confirms=True, on_return_raises=True)
        self._declared.clear()
        self._delays.clear()
        self._levels = False

    async def _drop(self) -> None:
        conn, self._conn, self._pub, self._sub = self._conn, None, None, None
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(*_UNAVAILABLE):
                await conn.close()

    async def connect(self) -> None:
        with self._guard():
            await self._ensure()

    async def close(self) -> None:
        if self._alive() and (self._consumers or self._buffer):
            with contextlib.suppress(*_UNAVAILABLE, HubbubError):
                for consumer, tag in self._consumers.values():
                    await consumer.cancel(tag)  # first, or what is given back comes back
                await self._give_back(self._buffer)  # prefetched, never handed out
        self._buffer.clear()
        self._held.clear()
        await self._drop()

    # -- topology ------------------------------------------------------------------------

    def _main(self, queue: str) -> str:
        return main_name(self.prefix, queue)

    def _dead(self, queue: str) -> str:
        return dead_name(self.prefix, queue)

    def _dead_queues(self, queue: str) -> list[str]:
        """Where ``queue``'s dead letters may be: the queue of today, then the legacy one."""
        return [dead_name(self.prefix, queue), legacy_dead_name(self.prefix, queue)]

    async def _declare_dead(self, conn: AbstractConnection, queue: str) -> None:
        """Declare ``queue``'s dead-letter queue with the retention and cap, and move into it
        what the legacy queue (hubbub up to 0.2, no arguments) still holds.

        Declared on a channel of its own: an existing queue with other arguments (another
        process set other limits) closes the channel, and is then used as it is, with a
        warning, rather than failing every dead letter.
        """
        name = self._dead(queue)
        channel = await conn.channel(publisher_confirms=False)
        try:
            await channel.declare_queue(name, durable=True, arguments=dead_arguments(
                self.retention.ttl, self.retention.limit))
        except ChannelPreconditionFailed:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("RabbitMQ queue %r exists with other dead-letter limits than"
                            " dead_ttl=%g, dead_max=%d; it keeps its own (delete it to"
                            " change them)", name, self.retention.ttl, self.retention.limit)
        finally:
            if not channel.is_closed:
                await channel.close()
        legacy = legacy_dead_name(self.prefix, queue)
        [count] = await ready_counts(conn, [legacy])
        if count is None:
            return
        _, pub, _ = await self._ensure()
        now, expired = self.clock.time(), 0
        async with self._browse(legacy) as messages:
            for m in messages:
                left = (seconds((m.headers or {}).get(H_DIED)) or now) + self.retention.ttl - now
                if left > 0:  # keeps the rest of its retention, not a fresh one
                    self._confirm(await pub.default_exchange.publish(aio_pika.Message(
                        m.body, message_id=m.message_id, priority=m.priority,
                        delivery_mode=DeliveryMode.PERSISTENT, headers=dict(m.headers or {}),
                        expiration=left), routing_key=name))
                else:
                    expired += 1
                await m.ack()
        log_dropped(queue, expired, f"older than the retention of {self.retention.ttl:g}s")
        with contextlib.suppress(*_UNAVAILABLE):
            channel = await conn.channel(publisher_confirms=False)
            try:
                await channel.queue_delete(legacy, if_empty=True)
            finally:
                if not channel.is_closed:
                    await channel.close()

    async def _declare(self, queue: str) -> str:
        """Declare ``queue`` and its dead-letter queue (once per connection)."""
        name = self._main(queue)
        if queue not in self._declared:
            _, pub, _ = await self._ensure()
            if self._known is None:
                self._known = set(await self._directory())
            if queue not in self._known:  # record it first: cleanup must find all it creates
                directory = await pub.declare_queue(directory_name(self.prefix), durable=True)
                entry = aio_pika.Message(queue.encode(), delivery_mode=DeliveryMode.PERSISTENT)
                self._confirm(await pub.default_exchange.publish(entry, directory.name))
                self._known.add(queue)
            await pub.declare_queue(name, durable=True,
                                    arguments={"x-max-priority": MAX_PRIORITY})
            conn, _, _ = await self._ensure()
            await self._declare_dead(conn, queue)
            self._declared.add(queue)
        return name

    async def _declare_delays(self, queue: str) -> None:
        """The delay cascade's exchanges (once) and ``queue``'s level queues."""
        if queue in self._delays:
            return
        await self._declare(queue)
        _, pub, _ = await self._ensure()
        if not self._levels:
            await declare_levels(pub, self.prefix)
            self._levels = True
        await declare_cascade(pub, self.prefix, queue)
        self._delays.add(queue)

    @contextlib.asynccontextmanager
    async def _browse(self, name: str) -> AsyncIterator[list[AbstractIncomingMessage]]:
        conn, _, _ = await self._ensure()
        async with browse(conn, name) as messages:
            yield messages

    async def _directory(self) -> list[str]:
        async with self._browse(directory_name(self.prefix)) as messages:
            return list(dict.fromkeys(m.body.decode() for m in messages))

    async def _queues(self) -> list[str]:
        names = set(await self._directory()) | (self._known or set())
        return sorted(names)

    async def _counts(self, names: Sequence[str]) -> list[int | None]:
        conn, _, _ = await self._ensure()
        return await ready_counts(conn, names)

    # -- publishing ----------------------------------------------------------------------

    @staticmethod
    def _confirm(result: Any) -> Any:
        if not isinstance(result, Basic.Ack):
            raise TransportError(f"RabbitMQ did not confirm a message ({type(result).__name__})")
        return result

    async def _send(self, queue: str, message: aio_pika.Message, eta: float | None) -> None:
        """Publish to ``queue`` now, or through the delay cascade until ``eta``."""
        main = await self._declare(queue)
        _, pub, _ = await self._ensure()
        now = self.clock.time()
        at = due_at(eta, now)  # NaN: now; infinity: the longest delay
        units = delay_units(at, now)
        if at is None or units <= 0:
            self._confirm(await pub.default_exchange.publish(message, routing_key=main))
            return
        await self._declare_delays(queue)
        exchange, headers = delay_route(self.prefix, queue, units, at)
        assert message.headers is not None
        message.headers.update(headers)
        top = await pub.get_exchange(exchange, ensure=False)
        self._confirm(await top.publish(message, routing_key=""))

    async def _send_all(self, sends: Sequence[tuple[str, aio_pika.Message, float | None]]) -> None:
        for queue, _, eta in sends:  # declare first, one at a time, then publish together
            await (self._declare_delays(queue) if eta is not None else self._declare(queue))
        results = await asyncio.gather(*(self._send(*s) for s in sends), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def publish(self, items: Sequence[Outgoing]) -> None:
        for i in items:  # before anything is sent: the worker drops the one and retries
            check_queue(i)
            try:
                main_name(self.prefix, i.queue)
            except ConfigurationError as exc:
                raise MessageRejectedByBroker(i.id, i.queue, str(exc)) from None
        sends = [(i.queue, build_message(i.queue, i.body, i.id, i.priority, 0), i.eta)
                 for i in items]
        with self._guard():
            async with self._bounded("publish"):
                await self._send_all(sends)

    # -- consuming -----------------------------------------------------------------------

    async def _subscribe(self, queues: Sequence[str]) -> None:
        _, _, sub = await self._ensure()
        gone = [q for q in self._consumers if q not in queues]
        for queue in gone:
            consumer, tag = self._consumers.pop(queue)
            await consumer.cancel(tag)
        if gone:
            await self._give_back([e for e in self._buffer if e[0] in gone])
        for queue in queues:
            if queue not in self._consumers:
                consumer = await sub.get_queue(await self._declare(queue), ensure=False)
                tag = await consumer.consume(self._receiver(self._gen, queue),
                                             arguments=self._consumer_args)
                self._consumers[queue] = (consumer, tag)

    def _receiver(self, gen: int, queue: str) -> Any:
        async def receive(message: AbstractIncomingMessage) -> None:
            if gen == self._gen:
                self._buffer.append((queue, message))
                self._arrived.set()

        return receive

    async def _set_prefetch(self, count: int) -> None:
        count = max(1, min(count, 65_535))
        if count != self._prefetch and self._sub is not None and not self._sub.is_closed:
            await self._sub.set_qos(prefetch_count=count, global_=True)
            self._prefetch = count

    async def fetch(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        names = list(dict.fromkeys(queues))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        self._fetching += 1
        try:
            with self._guard():
                await self._ensure()
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
            with contextlib.suppress(*_UNAVAILABLE):
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
            eta = seconds(headers.get(H_ETA)) if H_ETA in headers else None
            if m.redelivered:  # its last holder died: count that delivery durably, look again
                await self._again(queue, m, seen + 1, None)
            elif eta is not None and eta > now + 0.01:  # early (clock skew, very long delay)
                await self._again(queue, m, seen, eta)
            else:
                self._held[m.delivery_tag or 0] = queue
                out.append(Delivery(queue, m.body, m.message_id or f"amqp-{m.delivery_tag}",
                                    seen + 1, min(max(m.priority or 0, 0), MAX_PRIORITY),
                                    receipt=(self._gen, m), lease_until=now + lease))
        return out

    async def _again(self, queue: str, m: AbstractIncomingMessage, attempts: int,
                     eta: float | None) -> None:
        """Publish a copy of ``m`` (confirmed), then ack ``m``."""
        await self._send(queue, build_message(queue, m.body, m.message_id, m.priority or 0,
                                              attempts), eta)
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
        if gen != self._gen or self._sub is None or self._sub.is_closed:
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
        if self._sub is None or self._sub.is_closed:
            return
        keep = len(self._held) + len(self._buffer)
        if keep:
            await self._set_prefetch(keep)
            return
        consumers, self._consumers = list(self._consumers.values()), {}
        for consumer, tag in consumers:
            await consumer.cancel(tag)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._guard():
            await self._settle(deliveries)

    async def release(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        live = [d for d in deliveries if self._live(d) is not None]
        eta = self.clock.time() + delay if delay > 0 else None
        with self._guard():
            async with self._bounded("release"):
                await self._send_all([(d.queue, build_message(d.queue, d.body, d.id,
                                                              d.priority, d.attempts - 1), eta)
                                      for d in live])
            await self._settle(live)

    async def dead_letter(self, requests: Sequence[DeadLetterRequest]) -> None:
        live = [r for r in requests if self._live(r.delivery) is not None]
        died = repr(self.clock.time())
        with self._guard():
            async with self._bounded("dead letter"):
                conn, pub, _ = await self._ensure()
                queues = sorted({r.delivery.queue for r in live})
                for queue in queues:
                    await self._declare(queue)
                # RabbitMQ drops past the cap itself (drop-head) and says nothing: the count
                # before the batch tells how many it dropped (about: others write too).
                before = await ready_counts(conn, [self._dead(q) for q in queues])
                for r in live:
                    d = r.delivery
                    message = build_message(d.queue, d.body, d.id, d.priority, d.attempts,
                                            **{H_REASON: r.reason, H_DIED: died})
                    self._confirm(await pub.default_exchange.publish(
                        message, routing_key=self._dead(d.queue)))
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
        with self._guard():
            conn, _, _ = await self._ensure()
            names = [self._main(queue), *level_names(self.prefix, queue)]  # not dead letters
            existing = [n for n, c in zip(names, await self._counts(names), strict=True)
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
        with self._guard():
            names = await self._queues() if queues is None else list(queues)
            out = []
            for queue in names:
                main, levels = main_name(self.prefix, queue), level_names(self.prefix, queue)
                ready, dead_count, legacy, first = await self._counts(
                    [main, *self._dead_queues(queue), levels[0]])
                delayed = [first] + (await self._counts(levels[1:]) if first is not None else [])
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
        with self._guard():
            out: list[DeadLetter] = []
            for name in [queue] if queue is not None else await self._queues():
                for dead in self._dead_queues(name):
                    async with self._browse(dead) as messages:
                        # past the retention: RabbitMQ drops it when it reaches the head
                        letters = [dead_letter_of(name, m) for m in messages]
                        out += [d for d in letters if d.died_at >= cutoff][:limit]
            return sorted(out, key=lambda d: d.died_at)[:limit]

    async def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        wanted = None if ids is None else {short_id(i) for i in ids}
        count = 0
        with self._guard():
            for queue in await self._queues():
                for dead in self._dead_queues(queue):
                    async with self._browse(dead) as messages:
                        for m in messages:
                            if wanted is None or m.message_id in wanted:
                                await self._send(queue, build_message(
                                    queue, m.body, m.message_id, m.priority or 0, 0), None)
                                await m.ack()
                                count += 1
        return count

    async def _drop_dead(self, queues: Sequence[str],
                         doomed: Callable[[str, AbstractIncomingMessage], bool]) -> int:
        """Ack (delete) the dead letters of ``queues`` for which ``doomed`` holds."""
        count = 0
        with self._guard():
            for queue in queues:
                for dead in self._dead_queues(queue):
                    async with self._browse(dead) as messages:
                        for m in messages:
                            if doomed(queue, m):
                                await m.ack()
                                count += 1
        return count

    async def delete_dead(self, ids: Sequence[str]) -> int:
        wanted = {short_id(i) for i in ids}
        if not wanted:
            return 0
        with self._guard():
            queues = await self._queues()
        return await self._drop_dead(queues, lambda _q, m: m.message_id in wanted)

    async def purge_dead(self, *, older_than: float | None = None, task: str | None = None,
                         queue: str | None = None) -> int:
        match, now = DeadFilter(older_than, task, queue), self.clock.time()
        with self._guard():
            queues = await self._queues() if queue is None else [queue]

        def doomed(name: str, m: AbstractIncomingMessage) -> bool:
            letter = dead_letter_of(name, m)
            return match.matches(name, letter.died_at, now, letter.body)

        return await self._drop_dead(queues, doomed)
