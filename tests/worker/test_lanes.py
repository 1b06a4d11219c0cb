"""One worker, several pools chosen per queue; autoscale of a lane."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from hubbub import ConfigurationError, Hub, WorkerLoop
from hubbub.worker import lane as lane_module
from hubbub.worker.lane import Lane, parse_lane
from hubbub.worker.pools import POOLS, describe_pools, make_pool, resizable_pools
from hubbub.worker.pools.threads import ThreadPool


def test_each_queue_runs_on_the_pool_of_its_lane(hub: Hub) -> None:
    seen: dict[str, set[str]] = {"cpu": set(), "io": set()}

    @hub.task(queue="cpu")
    def crunch() -> None:
        seen["cpu"].add(threading.current_thread().name)

    @hub.task(queue="io")
    async def wait_io() -> None:
        await asyncio.sleep(0)
        seen["io"].add(threading.current_thread().name)

    crunch.delay_many([() for _ in range(10)])
    wait_io.delay_many([() for _ in range(10)])
    lanes = [parse_lane("cpu=threads:2"), parse_lane("io=async:50")]
    worker = WorkerLoop(hub, lanes=lanes, stop_when_idle=True)
    asyncio.run(asyncio.wait_for(worker.run(), 30))
    assert worker.processed == 20
    assert all(name.startswith("hubbub-task") for name in seen["cpu"])
    assert seen["io"] == {"MainThread"}  # coroutines on the worker's own loop


def test_a_busy_lane_does_not_hold_up_another(hub: Hub) -> None:
    gate = threading.Event()
    quick_done = threading.Event()

    @hub.task(queue="slow")
    def slow() -> None:
        gate.wait(10)

    @hub.task(queue="fast")
    def quick() -> None:
        quick_done.set()

    slow.delay_many([() for _ in range(4)])
    quick.delay()
    worker = WorkerLoop(hub, lanes=[parse_lane("slow=threads:1"), parse_lane("fast=threads:1")],
                        stop_when_idle=True)

    async def main() -> None:
        runner = asyncio.create_task(worker.run())
        ok = await asyncio.to_thread(quick_done.wait, 10)
        gate.set()
        await asyncio.wait_for(runner, 30)
        assert ok, "the fast lane waited for the slow one"

    asyncio.run(main())


def test_lane_specs_are_checked_with_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="QUEUES=POOL"):
        parse_lane("cpu")
    with pytest.raises(ConfigurationError, match="unknown pool 'bogus'"):
        parse_lane("cpu=bogus:2")
    with pytest.raises(ConfigurationError, match="not a whole number"):
        parse_lane("cpu=threads:x")
    lane = parse_lane("a,b=threads:3")
    assert (lane.queues, lane.pool.concurrency) == (["a", "b"], 3)


def test_a_queue_in_two_lanes_is_refused(hub: Hub) -> None:
    with pytest.raises(ConfigurationError, match="two lanes"):
        WorkerLoop(hub, lanes=[parse_lane("a=threads"), parse_lane("a,b=async")])


def test_autoscale_grows_a_busy_lane_up_to_its_max(hub: Hub) -> None:
    gate = threading.Event()
    running = []

    @hub.task
    def blocked() -> None:
        running.append(1)
        gate.wait(20)

    blocked.delay_many([() for _ in range(12)])
    lane = Lane(["default"], make_pool("threads", 1), prefetch=2, autoscale=(1, 4))
    worker = WorkerLoop(hub, lanes=[lane], stop_when_idle=True)
    sizes: list[int] = []

    async def main() -> Any:
        runner = asyncio.create_task(worker.run())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while lane.pool.concurrency < 4 and loop.time() < deadline:
            sizes.append(lane.pool.concurrency)
            await asyncio.sleep(0.05)
        sizes.append(lane.pool.concurrency)
        await asyncio.sleep(0.3)
        peak = len(running)
        gate.set()
        await asyncio.wait_for(runner, 30)
        return peak

    peak = asyncio.run(main())
    assert sizes[0] == 1
    assert sizes[-1] == 4
    assert peak == 4
    assert worker.processed == 12


def test_only_the_pools_that_declare_it_can_resize() -> None:
    assert resizable_pools() == ["threads", "prefork"]
    assert all(summary.strip() for summary in describe_pools().values())
    assert list(describe_pools()) == list(POOLS)


@pytest.mark.parametrize("kind", [k for k in POOLS if k not in resizable_pools()])
def test_a_pool_that_cannot_resize_refuses_resize_and_autoscale(kind: str) -> None:
    if kind == "gevent" and importlib.util.find_spec("gevent") is None:
        pytest.skip("needs the gevent extra")
    pool = make_pool(kind, 1)
    size = pool.concurrency
    assert not pool.resizable
    with pytest.raises(ConfigurationError, match=f"the {kind} pool cannot resize"):
        asyncio.run(pool.resize(size + 1))
    assert pool.concurrency == size
    with pytest.raises(ConfigurationError) as refused:
        Lane(["default"], pool, autoscale=(1, 4))
    assert str(refused.value) == ("autoscale needs a pool that can resize (threads, prefork); "
                                  f"the {kind} pool cannot")


def test_describing_the_pools_imports_no_optional_extra() -> None:
    # The CLI reads every pool class to write its help: gevent must stay out of the worker.
    code = ("import sys; from hubbub.worker.pools import describe_pools, resizable_pools; "
            "describe_pools(); resizable_pools(); import hubbub.cli.worker; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'gevent'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


class _Windowed(ThreadPool):
    """A pool whose children would hold ``queued`` more jobs behind its slots (as prefork's
    window does), without running anything: only the lane's arithmetic is under test."""

    def __init__(self, concurrency: int, queued: int) -> None:
        super().__init__(concurrency)
        self.queued = queued

    @property
    def window(self) -> int:
        return self.queued


def _busy(lane: Lane, held: int) -> Lane:
    lane.held, lane.running = held, min(held, lane.slots)
    return lane


def test_a_full_lane_fetches_again_once_half_its_backlog_has_drained() -> None:
    # 2 slots, 16 queued behind them, 2 prefetched: 20 in all, 18 of them waiting.
    lane = Lane(["q"], _Windowed(2, 16), prefetch=2)
    assert _busy(lane, 20).budget == 0
    assert _busy(lane, 11).budget == 0  # one fetch per finished task would trickle in
    assert _busy(lane, 10).budget == 10  # over half of the 18 drained: one batch for it
    assert _busy(lane, 1).budget == 19  # a slot would idle: fetch at once


def test_a_lane_without_a_window_keeps_its_prefetch_topped_up() -> None:
    lane = Lane(["q"], _Windowed(8, 0), prefetch=8)
    assert _busy(lane, 16).budget == 0
    assert _busy(lane, 12).budget == 0
    assert _busy(lane, 11).budget == 5
    assert _busy(lane, 3).budget == 13


def _paced(lane: Lane, finished: int, seconds: float = lane_module.PREFETCH_LOOK) -> int:
    """The lane's default prefetch once ``finished`` tasks ended over the last ``seconds``."""
    lane._paced_at = time.monotonic() - seconds
    lane.running = finished
    for _ in range(finished):
        lane.release_slot()
    lane.budget  # noqa: B018 - reading it is what paces the lane
    assert lane.prefetch is not None
    return lane.prefetch


def test_a_lane_holds_about_10_ms_of_its_pace_beyond_its_free_slots() -> None:
    lane = Lane(["q"], _Windowed(1000, 0))
    assert lane.prefetch == 16  # no pace yet: the floor
    # 5,000 tasks in 0.1 s: 50,000 a second, so 10 ms of them is 500 (a little less when the
    # reading comes late, never more).
    assert 400 <= _paced(lane, 5000) <= 500
    assert _paced(lane, 10) == 16  # slow tasks: back to the floor
    assert _paced(lane, 1_000_000) == 1000  # never more than the lane's concurrency


def test_a_small_lane_and_a_given_prefetch_are_not_paced() -> None:
    assert _paced(Lane(["q"], _Windowed(4, 0)), 5000) == 4
    assert _paced(Lane(["q"], _Windowed(1000, 0), prefetch=3), 5000) == 3
