"""Revocation and expiry hold until a task starts, on every pool.

A worker with one slot runs a slow task; a second task is fetched and waits for the slot.
Revoked (or expired) while it waits, it must never start: the worker looks again when the
slot frees, not only when it fetched the batch.
"""

from __future__ import annotations

import textwrap
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType

import pytest

from hubbub import State, TaskRevoked
from tests.worker.scratch import running_worker, scratch_app, wait_until

POOLS = ["solo", "threads", "async", "prefork", "hybrid", "gevent"]

SOURCE = textwrap.dedent('''
    import time
    from pathlib import Path
    from hubbub import Hub

    hub = Hub({url!r}, lease=5)

    @hub.task
    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return "slow done"

    @hub.task
    def mark(path: str) -> str:
        Path(path).write_text("ran")
        return "marked"
''')


def lifecycle_app(folder: Path) -> AbstractContextManager[ModuleType]:
    return scratch_app(folder, SOURCE, "lifeapp")


def held_count(app: ModuleType) -> int:
    async def read() -> int:
        client = await app.hub.client()
        return sum(s.leased for s in await client.transport.stats(["default"]))

    count: int = app.hub.bridge.run(read())
    return count


@pytest.mark.parametrize("pool", POOLS)
def test_a_task_revoked_while_it_waits_for_a_slot_never_starts(tmp_path: Path, pool: str) -> None:
    marker = tmp_path / "ran"
    with lifecycle_app(tmp_path) as app, running_worker(app, pool):
        first = app.slow.delay(1.5)
        wait_until(lambda: first.state == State.STARTED, "the slow task started")
        second = app.mark.delay(str(marker))
        wait_until(lambda: held_count(app) == 2, "the second task fetched, waiting")
        second.revoke()
        assert first.get(timeout=30) == "slow done"
        with pytest.raises(TaskRevoked):
            second.get(timeout=30)
        wait_until(lambda: held_count(app) == 0, "nothing left leased")
    assert not marker.exists(), "the revoked task ran"


@pytest.mark.parametrize("pool", POOLS)
def test_a_task_that_expires_while_it_waits_for_a_slot_never_starts(tmp_path: Path,
                                                                    pool: str) -> None:
    marker = tmp_path / "ran"
    with lifecycle_app(tmp_path) as app, running_worker(app, pool):
        first = app.slow.delay(1.5)
        wait_until(lambda: first.state == State.STARTED, "the slow task started")
        second = app.mark.apply_async((str(marker),), expires=0.5)
        wait_until(lambda: held_count(app) == 2, "the second task fetched, waiting")
        assert first.get(timeout=30) == "slow done"
        with pytest.raises(TaskRevoked, match="expired before it ran"):
            second.get(timeout=30)
        wait_until(lambda: held_count(app) == 0, "nothing left leased")
    assert not marker.exists(), "the expired task ran"


@pytest.mark.parametrize("pool", POOLS)
def test_a_revoke_that_loses_the_race_to_a_running_task_leaves_its_success(
        tmp_path: Path, pool: str) -> None:
    with lifecycle_app(tmp_path) as app, running_worker(app, pool):
        running = app.slow.delay(1.0)
        wait_until(lambda: running.state == State.STARTED, "the task started")
        assert running.revoke() is False  # running, and no terminate asked for
        assert running.get(timeout=30) == "slow done"
        assert running.state == State.SUCCESS
        assert running.revoke() is False  # finished: too late for any revoke
        assert running.revoke(terminate=True) is False
        assert running.state == State.SUCCESS


def test_revoking_a_group_of_ids_is_one_call_and_says_which_took_effect(tmp_path: Path) -> None:
    with lifecycle_app(tmp_path) as app:
        done = app.slow.delay(0)
        with running_worker(app, "solo"):
            assert done.get(timeout=30) == "slow done"
        pending = [app.slow.delay(0) for _ in range(3)]  # while no worker runs
        # One call for the whole group; the finished one is too late.
        taken = app.hub.bridge.run(app.hub.revoke([done.id, *(r.id for r in pending)]))
        assert sorted(taken) == sorted(r.id for r in pending)
        with running_worker(app, "solo"):
            for result in pending:
                with pytest.raises(TaskRevoked):
                    result.get(timeout=30)
            wait_until(lambda: held_count(app) == 0, "nothing left leased")
        assert done.state == State.SUCCESS
