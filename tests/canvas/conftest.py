"""A hub per test on SQLite, Redis and RabbitMQ (results in Redis), with a few tasks that
write what they did to a ledger, so a test can say what ran and what never did."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hubbub import Hub, Task
from tests import brokers

BROKERS = ["sqlite", "redis", "amqp"]


@dataclass
class Ledger:
    """What the tasks ran, in order (they run on the worker's threads)."""

    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, *args: Any) -> None:
        with self.lock:
            self.calls.append((name, args))

    def ran(self, name: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [args for n, args in self.calls if n == name]


@dataclass
class App:
    """The hub and its tasks."""

    hub: Hub
    ledger: Ledger
    add: Task[[int, int], int]
    total: Task[[list[int]], int]
    boom: Task[[Any], int]
    errback: Task[[str], str]
    echo: Task[..., Any]
    flaky: Task[[int], int]


def make_app(hub: Hub) -> App:
    ledger = Ledger()

    @hub.task(name="canvas.add")
    def add(x: int, y: int) -> int:
        ledger.add("add", x, y)
        return x + y

    @hub.task(name="canvas.total")
    def total(values: list[int]) -> int:
        ledger.add("total", values)
        return sum(values)

    @hub.task(name="canvas.boom")
    def boom(x: Any) -> int:
        ledger.add("boom", x)
        raise ValueError(f"boom on {x!r}")

    @hub.task(name="canvas.errback")
    def errback(task_id: str) -> str:
        ledger.add("errback", task_id)
        return task_id

    @hub.task(name="canvas.echo")
    def echo(*args: Any, **kwargs: Any) -> Any:
        ledger.add("echo", *args)
        return [list(args), kwargs]

    tries: dict[int, int] = {}

    @hub.task(name="canvas.flaky", retries=2, retry_backoff=0.01)
    def flaky(x: int) -> int:
        tries[x] = tries.get(x, 0) + 1
        ledger.add("flaky", x)
        if tries[x] < 2:
            raise ConnectionError("first try fails")
        return x * 10

    return App(hub, ledger, add, total, boom, errback, echo, flaky)


def _params() -> list[Any]:
    return [pytest.param(n, id=n) for n in BROKERS if brokers.available(n)]


@pytest.fixture(params=_params())
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    """A hub on each broker, results beside it (RabbitMQ: in Redis), and the tasks."""
    module = brokers.load(request.param)
    brokers.require(module)
    run_id = "cv" + uuid.uuid4().hex[:10]
    url = module.make_url(tmp_path, run_id)
    results = module.results_url(tmp_path, run_id)
    redis = brokers.load("redis")
    if results is None:
        brokers.require(redis)
        results = redis.results_url(tmp_path, run_id)
    hub = Hub(url, results=results, lease=5)
    try:
        yield make_app(hub)
    finally:
        hub.close()
        with contextlib.suppress(Exception):
            asyncio.run(module.cleanup(url))
        if module is not redis and results.startswith("redis"):
            with contextlib.suppress(Exception):
                asyncio.run(redis.cleanup(results))


def finish(hub: Hub, *results: Any, timeout: float = 30.0) -> None:
    """Run workers until every one of ``results`` is ready (a retry may wait in a broker's
    delay queue, which a drain does not always see: drain again until done)."""
    import time

    from hubbub.testing import drain

    deadline = time.monotonic() + timeout
    while True:
        drain(hub, timeout=max(1.0, deadline - time.monotonic()))
        if all(r.ready() for r in results):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not every result was ready within {timeout}s")
