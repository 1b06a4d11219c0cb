"""``Renewal``: keeps the leases of everything a worker holds, and notices a blocked loop.

Every third of the lease, the leases of held deliveries (running or waiting for a slot) and
of finished ones whose ack waits for the flusher are renewed in one call. Renewal runs on
the worker's event loop, so an ``async def`` task that blocks the loop starves it: the late
tick is reported with the tasks that were running, since their leases may have run out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from hubbub._redact import redact
from hubbub.transports.base import Delivery, Transport

log = logging.getLogger("hubbub.worker")


class Renewal:
    """Renews leases every ``lease / 3`` seconds.

    Args:
        transport: the broker that holds the leases.
        lease: seconds a lease lasts.
        held: the deliveries to renew, asked anew at each tick.
        running: names of the tasks running now (for the blocked-loop report).
    """

    def __init__(self, transport: Transport, lease: float,
                 held: Callable[[], list[Delivery]], running: Callable[[], set[str]]) -> None:
        self.transport = transport
        self.lease = lease
        self._held = held
        self._running = running
        self._started_lately: set[str] = set()  # task names started since the last tick
        # -- limits: more to renew at each tick (the concurrency slots of running tasks) --
        self.also: list[Callable[[], Awaitable[None]]] = []

    def started(self, task: str) -> None:
        """Note that ``task`` started: if the loop blocks soon after, it is a suspect."""
        self._started_lately.add(task)

    async def renew_forever(self) -> None:
        loop = asyncio.get_running_loop()
        every = self.lease / 3
        while True:
            due = loop.time() + every
            self._started_lately.clear()
            await asyncio.sleep(every)
            late = loop.time() - due
            if late > every:
                suspects = sorted(self._started_lately | self._running())
                log.error("the event loop was blocked for %.1fs; leases (%.0fs) may have run out "
                          "and held tasks may run twice. Running: %s. Move blocking code into "
                          "sync tasks (they run in threads) or raise --lease.", late, self.lease,
                          ", ".join(suspects) or "-")
            for renew in self.also:  # -- limits --
                try:
                    await renew()
                except Exception as exc:
                    log.warning("renewal of limit slots failed (%s); will try again",
                                redact(repr(exc)))
            held = self._held()
            if not held:
                continue
            try:
                lost = await self.transport.extend(held, lease=self.lease)
            except Exception as exc:
                log.warning("lease renewal failed (%s); will try again", redact(repr(exc)))
                continue
            # What was acked while the extend was under way (a flush's acks are in flight
            # when the tick takes its list) is not lost: only what is still held counts.
            still = {id(d) for d in self._held()} if lost else set()
            for delivery in (d for d in lost if id(d) in still):
                log.warning("lease of message %s was lost; another worker may run it too",
                            delivery.id)
