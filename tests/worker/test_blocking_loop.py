"""The async pool notices a task that blocks the event loop and names it, once per stall."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from hubbub import Hub
from hubbub.testing import drain
from hubbub.worker.pools.coroutines import AsyncPool


def blocked_warnings(caplog: pytest.LogCaptureFixture, task: str) -> list[str]:
    """Warnings about ``task``: on a loaded machine the worker's own I/O may stall too."""
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
            and "blocked the event loop" in r.getMessage() and task in r.getMessage()]


@pytest.mark.parametrize("limits", [{}, {"soft_timeout": 20.0}], ids=["plain", "with-limits"])
def test_a_task_blocking_the_loop_gets_one_warning_naming_it(
    hub: Hub, caplog: pytest.LogCaptureFixture, limits: dict[str, float]
) -> None:
    @hub.task(name="blocks", **limits)  # type: ignore[call-overload]
    async def blocks() -> str:
        time.sleep(0.8)  # the mistake the watchdog is for
        return "done"

    result = blocks.delay()
    with caplog.at_level(logging.WARNING, logger="hubbub.worker"):
        drain(hub, pool=AsyncPool(4, block_warning=0.2), timeout=20)
    assert result.get(timeout=5) == "done"
    [warning] = blocked_warnings(caplog, "task blocks")
    assert f"task blocks[{result.id}] has blocked the event loop" in warning


def test_tasks_that_await_are_not_reported(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    @hub.task
    async def polite() -> None:
        for _ in range(20):
            await asyncio.sleep(0.02)

    polite.delay_many([() for _ in range(5)])
    with caplog.at_level(logging.WARNING, logger="hubbub.worker"):
        drain(hub, pool=AsyncPool(10, block_warning=0.2), timeout=20)
    assert blocked_warnings(caplog, polite.name) == []


def test_block_warning_must_be_positive_or_none() -> None:
    assert AsyncPool(block_warning=None).block_warning is None
    with pytest.raises(ValueError, match="positive"):
        AsyncPool(block_warning=0)
