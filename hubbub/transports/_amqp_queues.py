"""The RabbitMQ transport's queues: declared once per connection (with their dead-letter
queue, and their delay cascade when a message is delayed), recorded in the directory queue
``<prefix>:queues`` (AMQP cannot list queues), and published into with confirms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import DeliveryMode

from hubbub.clock import Clock
from hubbub.transports._amqp_dead import DeadQueues
from hubbub.transports._amqp_link import Link, confirm
from hubbub.transports._amqp_topology import (
    declare_cascade,
    declare_levels,
    delay_route,
    delay_units,
    directory_name,
    main_arguments,
    main_name,
    quorum,
)
from hubbub.transports._safe import due_at

# (queue, message, eta or None for now)
Send = tuple[str, aio_pika.Message, float | None]


class Queues:
    """The queues under ``prefix`` that this transport declared and sends into.

    Args:
        link: the transport's connection.
        dead: their dead-letter queues, declared with each queue.
        prefix: the namespace of every queue and exchange.
        clock: the source of wall time for ETAs.
    """

    def __init__(self, link: Link, dead: DeadQueues, prefix: str, clock: Clock, *,
                 queue_type: str = "classic", delivery_limit: int | None = None) -> None:
        self._link, self._dead, self._prefix, self._clock = link, dead, prefix, clock
        self._type, self._args = queue_type, main_arguments(queue_type, delivery_limit)
        self._declared: set[str] = set()
        self._delays: set[str] = set()
        self._levels = False
        self._known: set[str] | None = None

    def forget(self) -> None:
        """Declare everything again: the connection is new."""
        self._declared.clear()
        self._delays.clear()
        self._levels = False

    async def declare(self, queue: str) -> str:
        """Declare ``queue`` and its dead-letter queue (once per connection)."""
        name = main_name(self._prefix, queue)
        if queue not in self._declared:
            _, pub, _ = await self._link.ensure()
            if self._known is None:
                self._known = set(await self._directory())
            if queue not in self._known:  # record it first: cleanup must find all it creates
                directory = await pub.declare_queue(directory_name(self._prefix), durable=True,
                                                    arguments=quorum(self._type))
                entry = aio_pika.Message(queue.encode(), delivery_mode=DeliveryMode.PERSISTENT)
                confirm(await pub.default_exchange.publish(entry, directory.name))
                self._known.add(queue)
            if self._type == "quorum":  # a broker-side poison cap dead-letters into ours
                args = {**self._args, "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": self._dead.name(queue)}
            else:
                args = self._args
            await pub.declare_queue(name, durable=True, arguments=args)
            conn, _, _ = await self._link.ensure()
            await self._dead.declare(conn, queue)
            self._declared.add(queue)
        return name

    def ready(self, queue: str, delayed: bool) -> bool:
        """Whether ``queue`` (and its delay cascade, if ``delayed``) is declared on this
        connection; read from any thread (a stale answer only declares again)."""
        return queue in (self._delays if delayed else self._declared)

    async def prepare(self, queue: str, delayed: bool) -> None:
        """Declare what a message for ``queue`` (delayed or not) is published into."""
        await (self._declare_delays(queue) if delayed else self.declare(queue))

    async def _declare_delays(self, queue: str) -> None:
        """The delay cascade's exchanges (once) and ``queue``'s level queues."""
        if queue in self._delays:
            return
        await self.declare(queue)
        _, pub, _ = await self._link.ensure()
        if not self._levels:
            await declare_levels(pub, self._prefix)
            self._levels = True
        await declare_cascade(pub, self._prefix, queue)
        self._delays.add(queue)

    async def _directory(self) -> list[str]:
        async with self._link.browse(directory_name(self._prefix)) as messages:
            return list(dict.fromkeys(m.body.decode() for m in messages))

    async def names(self) -> list[str]:
        """Every queue recorded under the prefix, by any process, sorted."""
        names = set(await self._directory()) | (self._known or set())
        return sorted(names)

    async def send(self, queue: str, message: aio_pika.Message, eta: float | None) -> None:
        """Publish to ``queue`` now, or through the delay cascade until ``eta``."""
        main = await self.declare(queue)
        _, pub, _ = await self._link.ensure()
        now = self._clock.time()
        at = due_at(eta, now)  # NaN: now; infinity: the longest delay
        units = delay_units(at, now)
        if at is None or units <= 0:
            confirm(await pub.default_exchange.publish(message, routing_key=main))
            return
        await self._declare_delays(queue)
        exchange, headers = delay_route(self._prefix, queue, units, at)
        assert message.headers is not None
        message.headers.update(headers)
        top = await pub.get_exchange(exchange, ensure=False)
        confirm(await top.publish(message, routing_key=""))

    async def send_all(self, sends: Sequence[Send]) -> None:
        """Declare each queue first, one at a time, then publish together."""
        for queue, _, eta in sends:
            await self.prepare(queue, eta is not None)
        if len(sends) == 1:  # the common delay(): no task to wrap it in
            await self.send(*sends[0])
            return
        results = await asyncio.gather(*(self.send(*s) for s in sends), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
