"""``Revocations``: finds out which held deliveries were revoked after they were admitted.

Admission reads the result store once per fetched batch; a task can be revoked after that,
while it waits for a slot. Every ``every`` seconds, while the worker holds anything, one
batched read of the held ids tells which are REVOKED now, and the worker drops those that
have not started, and asks the pool to stop running ones revoked with ``terminate=True``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from hubbub._redact import redact
from hubbub.results.base import ResultBackend, ResultRecord, State

if TYPE_CHECKING:
    from hubbub.worker.held import Held

log = logging.getLogger("hubbub.worker")

EVERY = 0.5  # seconds between two looks: how late a revoke may be noticed


class Revocations:
    """Polls the result store for revokes of held deliveries.

    Args:
        results: the store that keeps revokes.
        held: the deliveries held now.
        revoked: called with each held delivery found REVOKED, and its record.
        every: seconds between two looks.
    """

    def __init__(self, results: ResultBackend, held: Callable[[], list[Held]],
                 revoked: Callable[[Held, ResultRecord], None], every: float = EVERY) -> None:
        self.results = results
        self.every = every
        self._held = held
        self._revoked = revoked

    async def watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            held = self._held()
            if not held:
                continue
            try:
                found = await self.results.get([h.envelope.id for h in held])
            except Exception as exc:  # the store is down: the next look will tell
                log.debug("could not read revocations (%s)", redact(repr(exc)))
                continue
            for one in held:
                record = found.get(one.envelope.id)
                if record is not None and record.state == State.REVOKED:
                    self._revoked(one, record)
