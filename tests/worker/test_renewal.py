"""The lease renewer: which lost leases it reports."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from hubbub.transports.base import Delivery
from hubbub.worker.renewal import Renewal


class _Extender:
    """Reports every delivery it is first asked to extend as lost, once ``answer`` is set,
    and never answers again (one tick is under test)."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        if self.asked.is_set():
            await asyncio.Event().wait()  # cancelled with the renewer
        self.asked.set()
        await self.answer.wait()
        return list(deliveries)


def _delivery(message_id: str) -> Delivery:
    return Delivery("q", b"{}", message_id, 1, 0, receipt=message_id, lease_until=0.0)


async def _one_tick(held: list[Delivery], settled_meanwhile: list[Delivery]) -> None:
    transport = _Extender()
    renewal = Renewal(transport, 0.03, lambda: list(held), set)  # type: ignore[arg-type]
    renewer = asyncio.create_task(renewal.renew_forever())
    try:
        await asyncio.wait_for(transport.asked.wait(), 10)
        for delivery in settled_meanwhile:  # acked by the flusher while the extend ran
            held.remove(delivery)
        transport.answer.set()
        for _ in range(5):
            await asyncio.sleep(0)  # the renewer handles the answer
    finally:
        renewer.cancel()
        await asyncio.gather(renewer, return_exceptions=True)


def test_a_delivery_acked_while_its_lease_was_extended_is_not_reported_lost(
        caplog: pytest.LogCaptureFixture) -> None:
    acked, kept = _delivery("acked-meanwhile"), _delivery("still-held")
    with caplog.at_level(logging.WARNING, logger="hubbub.worker"):
        asyncio.run(_one_tick([acked, kept], [acked]))
    lost = [r.getMessage() for r in caplog.records if "was lost" in r.getMessage()]
    assert len(lost) == 1
    assert "still-held" in lost[0]
