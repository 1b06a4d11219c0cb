"""Revocation and expiry hold until a task starts, on every pool.

A worker with one slot runs a slow task; a second task is fetched and waits for the slot.
Revoked (or expired) while it waits, it must never start: the worker looks again when the
slot frees, not only when it fetched the batch.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from hubbub import State, TaskRevoked
from hubbub._loader import load_hub
from hubbub.worker.loop import WorkerLoop
from hubbub.worker.pools import make_pool

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


@contextmanager
def lifecycle_app(folder: Path) -> Iterator[ModuleType]:
    name = f"lifeapp_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(SOURCE.format(url=f"sqlite:///{folder / 'hub.db'}"))
    sys.path.insert(0, str(folder))
    hub = load_hub(f"{name}:hub")
    try:
        yield sys.modules[name]
    finally:
        hub.close()
        sys.modules.pop(name, None)
        sys.path.remove(str(folder))


@contextmanager
def running_worker(app: ModuleType, pool: str) -> Iterator[WorkerLoop]:
    """A worker with one slot, run on its own thread until the block ends."""
    options = {"coroutines": 1} if pool == "hybrid" else {}
    worker = WorkerLoop(app.hub, pool=make_pool(pool, 1, **options), prefetch=1)
    loop = asyncio.new_event_loop()
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            loop.run_until_complete(worker.run())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        loop.call_soon_threadsafe(worker.stop)
        thread.join(60)
        loop.close()
        assert not thread.is_alive(), "the worker did not stop"
        assert not failed, failed


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.02)


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
