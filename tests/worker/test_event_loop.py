"""The worker's event loop choice: ``run_worker(loop=...)``, ``$HUBBUB_LOOP``, uvloop's extra."""

from __future__ import annotations

import asyncio
import sys

import pytest

from hubbub import Hub, WorkerLoop, run_worker
from hubbub.errors import ConfigurationError
from hubbub.settings import loop_from_environment
from hubbub.worker import event_loop
from hubbub.worker.pools.coroutines import AsyncPool


def loops_seen(hub: Hub, loop: str | None, n: int = 3) -> list[str]:
    """Run ``n`` async tasks on a worker started by ``run_worker(loop=loop)``: the module of
    the loop each one ran on."""
    seen: list[str] = []

    @hub.task(name="which")
    async def which() -> None:
        await asyncio.sleep(0.01)
        seen.append(type(asyncio.get_running_loop()).__module__)

    which.delay_many([() for _ in range(n)])
    run_worker(WorkerLoop(hub, pool=AsyncPool(10), stop_when_idle=True), loop=loop)
    return seen


def test_a_worker_on_uvloop_runs_async_tasks_on_it(hub: Hub) -> None:
    pytest.importorskip("uvloop")  # in the test extra: CI runs this

    assert loops_seen(hub, "uvloop") == ["uvloop"] * 3


def test_a_worker_on_asyncio_runs_async_tasks_on_asyncios_loop(hub: Hub) -> None:
    seen = loops_seen(hub, "asyncio")

    assert len(seen) == 3
    assert all(module.startswith("asyncio.") for module in seen), seen


def test_hubbub_loop_chooses_the_loop_when_the_code_does_not(
        hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBBUB_LOOP", "asyncio")

    assert all(module.startswith("asyncio.") for module in loops_seen(hub, None))


def test_auto_is_uvloop_when_installed_else_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    assert event_loop("auto") == "uvloop"

    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed: import fails

    assert event_loop("auto") == "asyncio"
    assert event_loop("asyncio") == "asyncio"


def test_uvloop_without_its_extra_is_one_error_naming_the_fix(
        hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    ran: list[str] = []

    @hub.task(name="never")
    async def never() -> None:
        ran.append("ran")

    never.delay()
    with pytest.raises(ConfigurationError, match=r"pip install 'hubbub\[uvloop\]'"):
        run_worker(WorkerLoop(hub, pool=AsyncPool(10), stop_when_idle=True), loop="uvloop")
    assert ran == []  # refused before the worker started


@pytest.mark.parametrize("value", ["uvlop", "trio"])
def test_hubbub_loop_naming_no_loop_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"HUBBUB_LOOP=.* write one of auto, asyncio"):
        loop_from_environment({"HUBBUB_LOOP": value})


def test_hubbub_loop_is_not_an_unknown_hub_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBBUB_LOOP", "Asyncio")

    assert loop_from_environment() == "asyncio"
    Hub("memory://").close()  # the hub's settings leave the variable to the worker


def test_an_unknown_choice_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="loop must be one of auto, asyncio, uvloop"):
        event_loop("trio")


def test_time_limits_and_failures_hold_on_uvloop(hub: Hub) -> None:
    pytest.importorskip("uvloop")

    @hub.task(name="hard", timeout=0.2)
    async def hard() -> None:
        await asyncio.sleep(30)

    @hub.task(name="soft", soft_timeout=0.1, timeout=5)
    async def soft() -> None:
        await asyncio.sleep(30)

    @hub.task(name="boom")
    async def boom() -> None:
        raise ValueError("kaput")

    @hub.task(name="fine")
    async def fine(x: int) -> int:
        await asyncio.sleep(0.01)
        return x + 1

    results = [hard.delay(), soft.delay(), boom.delay(), fine.delay(1)]
    run_worker(WorkerLoop(hub, pool=AsyncPool(10), stop_when_idle=True), loop="uvloop")

    errors = [str(r.get(timeout=5, propagate=False)) for r in results[:3]]
    assert "time limit" in errors[0], errors
    assert "SoftTimeLimitExceeded" in errors[1], errors
    assert "kaput" in errors[2], errors
    assert results[3].get(timeout=5) == 2
