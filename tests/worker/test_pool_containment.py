"""Every pool turns whatever a task does into an outcome, and keeps serving (issue 10).

A task may raise ``BaseException``\\ s (``KeyboardInterrupt``, ``SystemExit``,
``GeneratorExit``), raise exceptions that cannot be printed or encoded, return values the
result store cannot hold, fork, or grow without bound. None of it may stop a worker, cost a
process pool a child (except memory: that child is killed), or produce an outcome that
cannot be sent or stored. The pools are driven directly, with the tasks of ``child_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from hubbub.job import Crashed, Failed, Job, Outcome, Succeeded
from hubbub.results.base import ResultRecord, State, encode_record
from hubbub.worker.execute import TEXT_LIMIT
from hubbub.worker.pools import make_pool
from hubbub.worker.pools.base import Pool
from hubbub.worker.pools.prefork import PreforkPool
from tests.worker.child_app import child_app

no_gevent = pytest.mark.skipif(importlib.util.find_spec("gevent") is None,
                               reason="needs the gevent extra")
POOLS = ["solo", "threads", "async", "prefork", "hybrid", pytest.param("gevent", marks=no_gevent)]
PROCESS_POOLS = ["prefork", "hybrid", pytest.param("gevent", marks=no_gevent)]
SMALL = {"solo": None, "threads": 2, "async": 10, "prefork": 1, "hybrid": 1, "gevent": 4}
RUN_TIMEOUT = 20.0  # seconds any one job may take here


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModuleType]:
    with child_app(tmp_path) as module:
        yield module


def new_pool(kind: str, **options: object) -> Pool:
    if kind in {"async", "hybrid"}:
        options.setdefault("block_warning", None)
    return make_pool(kind, SMALL[kind], **options)


@contextlib.asynccontextmanager
async def started(app: ModuleType, kind: str, **options: object) -> AsyncIterator[Pool]:
    pool = new_pool(kind, **options)
    await asyncio.wait_for(pool.start(app.hub), RUN_TIMEOUT)
    try:
        yield pool
    finally:
        await asyncio.wait_for(pool.stop(), RUN_TIMEOUT)


@pytest.fixture(params=POOLS)
async def pool(request: pytest.FixtureRequest, app: ModuleType) -> AsyncIterator[Pool]:
    async with started(app, request.param) as pool:
        yield pool


async def run(pool: Pool, app: ModuleType, name: str, *args: object,
              timeout: float | None = None) -> Outcome:
    job = Job(f"{name}-{time.monotonic_ns()}", getattr(app, name).name, args, {},
              timeout=timeout)
    return await asyncio.wait_for(pool.run(job), RUN_TIMEOUT)


def children_started(pool: Pool) -> int:
    """Children a process pool has started so far (1 for in-process pools)."""
    children = getattr(pool, "children", None)
    return 1 if children is None else int(children.started)


async def assert_still_serves(pool: Pool, app: ModuleType) -> None:
    outcome = await run(pool, app, "add", 2, 3)
    assert outcome == Succeeded(5, outcome.duration)


def assert_storable(outcome: Failed) -> None:
    encode_record(ResultRecord("id", State.FAILURE, "t", error=outcome.error))


# -- 1. BaseExceptions are failures ---------------------------------------------------------

BASE_EXCEPTIONS = {
    # raised: (error type, message)
    "KeyboardInterrupt": ("KeyboardInterrupt", "task raised KeyboardInterrupt"),
    "SystemExit": ("SystemExit", "3"),
    "GeneratorExit": ("GeneratorExit", "from a task"),
    "CancelledError": ("CancelledError", "raised by the task itself"),
}


@pytest.mark.parametrize("raised", list(BASE_EXCEPTIONS))
async def test_a_base_exception_raised_by_a_task_is_a_failure_on_every_pool(
    pool: Pool, app: ModuleType, raised: str
) -> None:
    error_type, message = BASE_EXCEPTIONS[raised]
    # sync, async on the loop, async with a time limit (a task of its own on the loop)
    for name, timeout in [("raises", None), ("async_raises", None), ("async_raises", 10.0)]:
        outcome = await run(pool, app, name, raised, timeout=timeout)
        assert isinstance(outcome, Failed), (name, timeout, outcome)
        assert (outcome.error.type, outcome.error.message) == (error_type, message)
        assert outcome.retry is False
    await assert_still_serves(pool, app)
    assert children_started(pool) == 1  # no child was lost to it either


# -- 2. describing an exception never raises -----------------------------------------------

async def test_an_exception_that_cannot_be_printed_is_described_anyway(
    pool: Pool, app: ModuleType
) -> None:
    for name in ("raises", "async_raises"):
        outcome = await run(pool, app, name, "Unprintable")
        assert isinstance(outcome, Failed)
        assert (outcome.error.type, outcome.error.message) == ("Unprintable", "Unprintable()")
        outcome = await run(pool, app, name, "Unspeakable")
        assert isinstance(outcome, Failed)
        assert outcome.error.type == "Unspeakable"
        assert outcome.error.message == "<unprintable Unspeakable>"
        assert "raise_it" in outcome.error.traceback
        assert_storable(outcome)
    await assert_still_serves(pool, app)
    assert children_started(pool) == 1


async def test_an_exception_message_with_lone_surrogates_becomes_storable_text(
    pool: Pool, app: ModuleType
) -> None:
    outcome = await run(pool, app, "raises", "surrogate")
    assert isinstance(outcome, Failed)
    assert outcome.error.message == "bad byte \\udcff here"
    assert "\\udcff" in outcome.error.traceback
    assert_storable(outcome)


async def test_a_huge_exception_keeps_a_bounded_message_and_traceback(
    pool: Pool, app: ModuleType
) -> None:
    outcome = await run(pool, app, "raises", "huge")
    assert isinstance(outcome, Failed)
    assert outcome.error.message.startswith("xxx")
    assert len(outcome.error.message.encode()) <= TEXT_LIMIT + 10
    assert len(outcome.error.traceback.encode()) <= TEXT_LIMIT + 10
    assert outcome.error.traceback.endswith("xxx\n")  # the end, where the error is, is kept


# -- 3. a result the store cannot hold is a failure that it can ----------------------------

@pytest.mark.parametrize("kind", ["deep", "object", "nan", "inf"])  # a set now travels
async def test_a_result_json_cannot_hold_is_a_failure_with_a_reason(
    pool: Pool, app: ModuleType, kind: str
) -> None:
    for name in ("returns", "async_returns"):
        outcome = await run(pool, app, name, kind)
        assert isinstance(outcome, Failed), (name, outcome)
        assert outcome.error.type == "ResultNotEncodable"
        assert "return value cannot be stored as JSON" in outcome.error.message
        assert outcome.retry is False
        assert_storable(outcome)
    await assert_still_serves(pool, app)
    assert children_started(pool) == 1


# -- 4. a task that forks (prefork) ---------------------------------------------------------

def sockets_held_by(pid: int) -> list[str]:
    fds = Path(f"/proc/{pid}/fd")
    links = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            links.append(os.readlink(fd))
    return [link for link in links if link.startswith("socket:")]


def is_gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@contextlib.contextmanager
def killed_at_exit(pids: list[int]) -> Iterator[list[int]]:
    """Grandchildren the test's tasks forked: killed whatever happens."""
    try:
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def wait_until(condition: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_grandchild_forked_by_a_task_does_not_hold_up_stopping_prefork(
    app: ModuleType,
) -> None:
    with killed_at_exit([]) as grandchildren:
        pool = PreforkPool(1)
        await pool.start(app.hub)
        try:
            [child] = pool.children.pids
            running = asyncio.ensure_future(pool.run(Job("j", app.fork_sleeper.name, (30.0,), {})))

            def forked() -> bool:
                found = Path(f"/proc/{child}/task/{child}/children").read_text().split()
                grandchildren.extend(int(pid) for pid in found if int(pid) not in grandchildren)
                return bool(grandchildren)

            await wait_until(forked, "the task to fork")
            assert sockets_held_by(grandchildren[0]) == []  # closed right after the fork
        finally:
            began = time.monotonic()
            await asyncio.wait_for(pool.stop(), 15)  # the child is busy: it is terminated
        assert time.monotonic() - began < 3  # not STOP_GRACE, not the grandchild's 30 s
        outcome = await asyncio.wait_for(running, 5)
        assert isinstance(outcome, Crashed)
        assert "the pool stopped" in outcome.reason


async def test_a_grandchild_that_keeps_the_socket_does_not_hold_up_stopping_prefork(
    app: ModuleType,
) -> None:
    with killed_at_exit([]) as grandchildren:
        pool = PreforkPool(1)
        await pool.start(app.hub)
        try:
            outcome = await run(pool, app, "fork_from_c")  # forked by C: no hook ran
            assert isinstance(outcome, Succeeded)
            grandchildren.append(outcome.value)
            assert sockets_held_by(outcome.value) != []  # the case the parent must handle
        finally:
            began = time.monotonic()
            await asyncio.wait_for(pool.stop(), 15)
        assert time.monotonic() - began < 3


@pytest.mark.parametrize(("kind", "task"), [
    ("prefork", "fork_and_return"),
    ("prefork", "fork_and_return_async"),
    ("hybrid", "fork_and_return"),  # in one of the child's threads
    ("hybrid", "fork_and_return_async"),  # on the child's event loop
    pytest.param("gevent", "fork_and_return", marks=no_gevent),  # in a greenlet
])
async def test_a_fork_that_returns_in_both_processes_leaves_one_child_serving(
    app: ModuleType, tmp_path: Path, kind: str, task: str
) -> None:
    marker = tmp_path / "grandchild.pid"
    with killed_at_exit([]) as grandchildren:
        pool = new_pool(kind)
        await pool.start(app.hub)
        try:
            outcome = await run(pool, app, task, str(marker))
            assert outcome == Succeeded("child", outcome.duration)
            await wait_until(marker.exists, "the grandchild to write its pid")
            await wait_until(lambda: marker.read_text() != "", "the pid")
            grandchildren.append(int(marker.read_text()))
            await wait_until(lambda: is_gone(grandchildren[0]), "the grandchild to exit")
            for i in range(5):
                outcome = await run(pool, app, "add", i, 1)
                assert outcome == Succeeded(i + 1, outcome.duration)
            assert children_started(pool) == 1
        finally:
            began = time.monotonic()
            await asyncio.wait_for(pool.stop(), 15)
        assert time.monotonic() - began < 3


# -- 5. --max-memory-per-child is kept while a task runs ------------------------------------

@pytest.mark.parametrize("kind", PROCESS_POOLS)
async def test_a_child_growing_past_max_memory_is_killed_mid_task(
    app: ModuleType, kind: str
) -> None:
    async with started(app, kind, max_memory_per_child=100) as pool:
        outcome = await run(pool, app, "balloon", 400)  # 10 MiB every 50 ms
        assert isinstance(outcome, Crashed), outcome
        assert "child exceeded --max-memory-per-child 100 MiB (RSS " in outcome.reason
        assert app.balloon.name in outcome.reason
        assert outcome.duration < 5.0  # killed on its way up, not long after
        await assert_still_serves(pool, app)  # on the replacement
        assert children_started(pool) == 2
