"""``current_task().update_state(...)`` from every pool reaches the result store.

A task reports a state of its own and waits for the test to let it go, so the test reads
the reported state and meta while the task is still running; then the task's end replaces
them with its result.
"""

from __future__ import annotations

import textwrap
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType

import pytest

from hubbub import HubbubError, State, current_task
from tests.worker.scratch import running_worker, scratch_app, wait_until
from tests.worker.test_lifecycle import POOLS

SOURCE = textwrap.dedent('''
    import asyncio, time
    from pathlib import Path
    from hubbub import Hub, current_task

    hub = Hub({url!r}, lease=5)

    def _wait_for(marker: str) -> None:
        deadline = time.monotonic() + 30
        while not Path(marker).exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    @hub.task
    def steps(marker: str) -> str:
        for step in range(3):
            current_task().update_state(meta={{"step": step}})
        current_task().update_state("WAITING", {{"step": 3, "of": 3}})
        _wait_for(marker)
        return "done"

    @hub.task
    async def async_steps(marker: str) -> str:
        current_task().update_state("WAITING", {{"step": 1}})
        deadline = time.monotonic() + 30
        while not Path(marker).exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return "done"

    @hub.task
    def chatty(n: int) -> int:
        for i in range(n):
            current_task().update_state(meta={{"i": i}})
        return n
''')


def progress_app(folder: Path) -> AbstractContextManager[ModuleType]:
    return scratch_app(folder, SOURCE, "progressapp")


@pytest.mark.parametrize("pool", POOLS)
def test_a_running_task_reports_its_own_state_and_meta_then_its_result(
        tmp_path: Path, pool: str) -> None:
    marker = tmp_path / "go"
    with progress_app(tmp_path) as app, running_worker(app, pool):
        result = app.steps.delay(str(marker))
        wait_until(lambda: result.state == "WAITING", "the task reported WAITING")
        assert result.meta == {"step": 3, "of": 3}
        assert result.info()["status"] == "WAITING"
        marker.write_text("go")
        assert result.get(timeout=30) == "done"  # get() waits for a final state
        assert result.state == State.SUCCESS
        assert result.meta is None


@pytest.mark.parametrize("pool", ["async", "hybrid", "gevent"])
def test_an_async_task_reports_its_state_too(tmp_path: Path, pool: str) -> None:
    marker = tmp_path / "go"
    with progress_app(tmp_path) as app, running_worker(app, pool):
        result = app.async_steps.delay(str(marker))
        wait_until(lambda: result.state == "WAITING", "the task reported WAITING")
        assert result.meta == {"step": 1}
        marker.write_text("go")
        assert result.get(timeout=30) == "done"


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_tight_loop_of_updates_is_coalesced_and_the_task_ends_normally(
        tmp_path: Path, pool: str) -> None:
    with progress_app(tmp_path) as app, running_worker(app, pool):
        result = app.chatty.delay(20_000)
        assert result.get(timeout=60) == 20_000
        assert result.state == State.SUCCESS


def test_update_state_refuses_final_states_bad_meta_and_use_outside_a_task() -> None:
    with pytest.raises(HubbubError, match="outside a running task"):
        current_task().update_state()
    from hubbub.context import TaskContext

    ctx = TaskContext("id", "t", 0, 0, "q")
    with pytest.raises(ValueError, match="set by hubbub when the task ends"):
        ctx.update_state("SUCCESS")
    with pytest.raises(ValueError, match="state name"):
        ctx.update_state("")
    with pytest.raises(TypeError, match="cannot be stored"):
        ctx.update_state(meta={"x": object()})
    with pytest.raises(TypeError, match="string keys"):
        ctx.update_state(meta={1: "x"})  # type: ignore[dict-item]
