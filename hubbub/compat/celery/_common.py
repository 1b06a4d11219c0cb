"""What the Redis and RabbitMQ bridge sources share: reading a delivery into an envelope,
turning a hubbub retry back into a Celery message, and dead-letter records."""

from __future__ import annotations

import abc
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hubbub._text import cap
from hubbub.errors import ErrorKind
from hubbub.message import Envelope, decode
from hubbub.results.base import ErrorInfo, State
from hubbub.worker.admission import Refused
from hubbub.worker.sources import Source

from .protocol import (
    Built,
    CeleryMessage,
    CeleryRefused,
    build,
    expires_at,
    to_envelope,
)

if TYPE_CHECKING:
    from hubbub.hub import Hub
    from hubbub.transports.base import DeadLetterRequest, Delivery, Outgoing

    from .results import CeleryResultWriter

log = logging.getLogger("hubbub.celery")


@dataclass(slots=True)
class Receipt:
    """A bridge delivery's handle: the source that leased it, its own handle, and the
    message as read at fetch (or why it cannot be read)."""

    source: CelerySource
    handle: Any
    message: CeleryMessage | CeleryRefused
    ran: bool = False  # dispatched to a pool (set by the results middleware)


class CelerySource(Source):
    """A bridge source: Celery's queues, read as hubbub envelopes.

    Args:
        hub: the app whose tasks run (their retries and time limits apply).
        queues: Celery queue names.
        results: where Celery callers read results, or None.
    """

    def __init__(self, hub: Hub, queues: tuple[str, ...],
                 results: CeleryResultWriter | None) -> None:
        self.hub = hub
        self.queues = queues
        self.results = results
        self.max_size = hub.settings.limits.max_message_size

    @abc.abstractmethod
    async def send(self, env: Envelope) -> None:
        """Send ``env`` as a Celery message on Celery's queue ``env.queue`` (the next step
        of a chain), confirmed by the broker.

        Raises:
            MessageError: an argument cannot be sent as JSON.
            TransportUnavailable: the broker cannot be reached.
        """

    def owns(self, delivery: Delivery) -> bool:
        receipt = delivery.receipt
        return isinstance(receipt, Receipt) and receipt.source is self

    def read(self, delivery: Delivery) -> Envelope | Refused:
        found = delivery.receipt.message
        if isinstance(found, CeleryRefused):
            return Refused(str(found), found.task_id, found.task)
        task = self.hub.tasks.get(found.task)
        spec = task.spec if task is not None else None
        try:
            return to_envelope(found, delivery.queue,
                               max_retries=spec.retries if spec else 0,
                               timeout=spec.timeout if spec else None,
                               soft_timeout=spec.soft_timeout if spec else None)
        except CeleryRefused as exc:
            return Refused(str(exc), exc.task_id, exc.task)

    def retried(self, item: Outgoing) -> Built:
        """The Celery message for a hubbub retry of one of this source's deliveries.

        Raises:
            MessageError: the retry's body is not a readable hubbub envelope.
        """
        env = decode(item.body, self.hub.settings.accept,
                     self.hub.settings.limits.max_message_size, None)
        return build(env)

    def dead_record(self, request: DeadLetterRequest, payload: str | None = None) -> bytes:
        """One dead letter as stored beside Celery's queue: JSON with id, task, reason."""
        found = request.delivery.receipt.message
        task = found.task
        return json.dumps({
            "id": request.delivery.id, "task": task, "queue": request.delivery.queue,
            "reason": cap(request.reason), "died_at": time.time(), "payload": payload,
        }).encode()

    async def tell_expired(self, deliveries: Sequence[Delivery]) -> None:
        """Before an ack: write REVOKED for Celery callers of each task that never ran
        because its ``expires`` had passed (as a Celery worker does). A task that ran keeps
        the state it ended in."""
        if self.results is None:
            return
        now = time.time()
        for d in deliveries:
            receipt = d.receipt
            found = receipt.message
            if receipt.ran or not isinstance(found, CeleryMessage):
                continue
            expires = expires_at(found)
            if expires is not None and expires <= now:
                try:
                    # Celery's own exception for it, which Celery callers catch.
                    await self.results.write(found.id, State.REVOKED, {
                        "exc_type": "TaskRevokedError", "exc_message": ["expired"],
                        "exc_module": "celery.exceptions"}, keep_done=True)
                except Exception as exc:  # the ack goes ahead: the task is not run anyway
                    log.error("could not write Celery's REVOKED for %s: %s", found.id, exc)

    async def tell_celery(self, requests: Sequence[DeadLetterRequest]) -> None:
        """Write a FAILURE that Celery callers can read for each dead-lettered task."""
        if self.results is None:
            return
        for request in requests:
            found = request.delivery.receipt.message
            task_id = found.id if isinstance(found, CeleryMessage) else found.task_id
            if task_id:
                await self.results.write_failure(
                    task_id, ErrorInfo(ErrorKind.MESSAGE, request.reason))

