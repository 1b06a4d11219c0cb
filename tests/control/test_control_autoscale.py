"""Autoscale says what it does: every grow and shrink is one log line with the lane, the old
and new size and why; bounds set remotely take effect at once."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from hubbub.errors import ConfigurationError
from hubbub.worker import lane as lane_module
from hubbub.worker.lane import SHRINK_AFTER, Lane
from hubbub.worker.pools.threads import SoloPool, ThreadPool


async def test_autoscale_logs_every_grow_and_shrink_with_lane_sizes_and_reason(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(lane_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    lane = Lane(["cpu", "io"], ThreadPool(1), autoscale=(1, 4))
    with caplog.at_level(logging.INFO, logger="hubbub.worker"):
        lane.held, lane.running = 3, 1  # every slot busy, two waiting
        await lane.autoscale_step()
        assert lane.pool.concurrency == 3
        lane.held, lane.running = 0, 0  # idle
        await lane.autoscale_step()  # starts the quiet period
        now[0] += SHRINK_AFTER
        await lane.autoscale_step()
        assert lane.pool.concurrency == 2
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["lane cpu,io: pool threads 1 -> 3 (autoscale: 2 waiting, every slot busy)",
                     f"lane cpu,io: pool threads 3 -> 2 (autoscale: 0 of 3 busy for "
                     f"{SHRINK_AFTER:.0f}s)"]


async def test_new_autoscale_bounds_resize_into_them_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lane = Lane(["q"], ThreadPool(8))
    with caplog.at_level(logging.INFO, logger="hubbub.worker"):
        await lane.set_autoscale((2, 4))
    assert (lane.autoscale, lane.pool.concurrency) == ((2, 4), 4)
    assert "lane q: autoscale off -> 2..4" in caplog.text
    assert "lane q: pool threads 8 -> 4 (new autoscale bounds)" in caplog.text
    with pytest.raises(ConfigurationError, match="min <= max"):
        await lane.set_autoscale((5, 3))
    with pytest.raises(ConfigurationError, match="the solo pool cannot"):
        await Lane(["s"], SoloPool()).set_autoscale((1, 2))


async def test_a_lane_without_queues_fetches_nothing() -> None:
    lane = Lane(["q"], ThreadPool(2))
    assert lane.budget > 0
    lane.queues = []
    assert lane.budget == 0
