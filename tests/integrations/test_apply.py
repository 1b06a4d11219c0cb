"""``Task.apply``: a task run eagerly in the caller's process, with a real task context,
hooks and inline retries, returning a finished result."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub import Hub, Reject, Retry, State, TaskContext, TaskFailed, current_task
from hubbub.testing import drain


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    hub = Hub(f"sqlite:///{tmp_path / 'apply.db'}")
    yield hub
    hub.close()


def test_apply_runs_here_with_a_task_context_and_returns_a_finished_result(hub: Hub) -> None:
    @hub.task
    def whoami(x: int) -> dict[str, object]:
        ctx = current_task()
        return {"id": ctx.id, "task": ctx.task, "x": x, "pair": (x, x)}

    result = whoami.apply((3,), task_id="fixed-id")
    assert result.state == State.SUCCESS
    assert result.ready()
    assert result.successful()
    assert not result.failed()
    # The value reads back as a worker's would (a tuple stays a tuple).
    assert result.get() == {"id": "fixed-id", "task": whoami.name, "x": 3, "pair": (3, 3)}
    assert result.result == result.get()
    assert result.traceback is None
    assert drain(hub, timeout=30).processed == 0  # nothing was sent


def test_retries_happen_inline_up_to_the_tasks_retries(hub: Hub) -> None:
    seen: list[int] = []

    @hub.task(retries=3, retry_backoff=60)
    def flaky() -> str:
        seen.append(current_task().retries)
        if len(seen) < 3:
            raise ConnectionError("try again")
        return "third time"

    result = flaky.apply()
    assert result.get() == "third time"
    assert seen == [0, 1, 2]  # and no 60 s backoff was waited for
    assert result.record().retries == 2


def test_a_task_out_of_retries_fails_with_its_own_error(hub: Hub) -> None:
    @hub.task(retries=1)
    def broken() -> None:
        raise Retry(countdown=30) from KeyError("missing")

    result = broken.apply()
    assert result.state == State.FAILURE
    with pytest.raises(TaskFailed) as info:
        result.get()
    assert isinstance(info.value, KeyError)
    assert "KeyError" in (result.traceback or "")
    assert isinstance(result.get(propagate=False), KeyError)


def test_reject_and_bad_arguments(hub: Hub) -> None:
    @hub.task
    def picky(x: int) -> None:
        raise Reject("not today")

    assert picky.apply((1,)).state == State.FAILURE
    with pytest.raises(TaskFailed, match="not today"):
        picky.apply((1,)).get()
    with pytest.raises(TypeError, match="cannot be sent with these arguments"):
        picky.apply((1, 2))


def test_apply_runs_the_hubs_task_hooks(hub: Hub) -> None:
    calls: list[str] = []

    @hub.around_task
    @contextlib.contextmanager
    def around(ctx: TaskContext) -> Iterator[None]:
        calls.append(f"enter {ctx.task}")
        try:
            yield
        finally:
            calls.append("exit")

    @hub.on_task_failure
    def failed(ctx: TaskContext, exc: BaseException) -> None:
        calls.append(f"failed {type(exc).__name__}")

    @hub.task
    def bad() -> None:
        raise ValueError("nope")

    bad.apply()
    assert calls == [f"enter {bad.name}", "failed ValueError", "exit"]


async def test_an_async_task_applies_from_sync_code_and_from_a_running_loop(hub: Hub) -> None:
    @hub.task
    async def double(x: int) -> int:
        return 2 * x + len(current_task().id) * 0

    assert double.apply((21,)).get() == 42  # from inside this test's running loop
    assert await double.apply((4,)).wait() == 8
