"""Hostile input below hubbub: entries another tool (or a bug, or an attacker) wrote straight
into the broker, next to good tasks, for a real worker to fetch.

``site`` is parametrized over the brokers that keep data outside the process. Each test gets
an isolated namespace (prefix, or a fresh SQLite file), a Hub on it with one task that
counts its runs, and helpers to read back what the broker holds; teardown removes the
namespace even when the test failed. An unreachable server skips locally and fails when
``CI=true`` (see ``tests/brokers``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import greenstalk  # type: ignore[import-untyped]
import pytest

from hubbub import Hub
from hubbub.task import Task
from hubbub.transports import DeadLetter, QueueStats, Transport, open_transport
from tests import brokers

BROKERS = ["sqlite", "redis", "amqp", "beanstalk"]
QUEUE = "default"
T = TypeVar("T")


@dataclass
class Site:
    """One broker namespace with a hub, a counting task and raw access for the test."""

    name: str
    url: str
    module: ModuleType
    run_id: str
    hub: Hub
    runs: collections.Counter[str] = field(default_factory=collections.Counter)
    task: Task[Any, Any] | None = None
    sent: int = 0

    def run(self, coro_fn: Callable[[Transport], Awaitable[T]]) -> T:
        """``coro_fn(transport)`` on a freshly connected transport of this namespace."""

        async def go() -> T:
            transport = open_transport(self.url)
            await transport.connect()
            try:
                return await asyncio.wait_for(coro_fn(transport), 30)
            finally:
                await transport.close()

        return asyncio.run(go())

    def stats(self) -> QueueStats:
        async def read(t: Transport) -> QueueStats:
            [stats] = await t.stats([QUEUE])
            return stats

        return self.run(read)

    def dead(self) -> list[DeadLetter]:
        async def read(t: Transport) -> list[DeadLetter]:
            return await t.list_dead(QUEUE)

        return self.run(read)

    def send_good(self, n: int) -> list[str]:
        """Publish ``n`` good tasks; returns the values they will record when run."""
        assert self.task is not None
        values = [f"good-{self.sent + i}" for i in range(n)]
        self.sent += n
        self.task.delay_many([(v,) for v in values])
        return values


def _params() -> list[Any]:
    return [pytest.param(n, id=n) for n in BROKERS if brokers.available(n)]


@pytest.fixture(params=_params())
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    module = brokers.load(request.param)
    brokers.require(module)
    run_id = "h" + uuid.uuid4().hex[:10]
    url = module.make_url(tmp_path, run_id)
    hub = Hub(url, results=module.results_url(tmp_path, run_id) or "none", lease=5)
    s = Site(request.param, url, module, run_id, hub)

    @hub.task(name="hostile.record")
    def record(value: str) -> None:
        s.runs[value] += 1

    s.task = record
    try:
        yield s
    finally:
        with contextlib.suppress(Exception):
            hub.close()
        if request.param == "beanstalk":
            _delete_jobs(run_id)  # tests.brokers' cleanup reads bodies as UTF-8; these aren't
        asyncio.run(module.cleanup(url))


def _delete_jobs(prefix: str) -> None:
    """Delete every job of the namespace, bodies read as bytes."""
    with greenstalk.Client(("127.0.0.1", 11300), encoding=None) as client:
        for tube in client.tubes():
            if not (tube.startswith(prefix + ".") or tube == prefix + "$dead"):
                continue
            client.use(tube)
            for peek in (client.peek_ready, client.peek_delayed, client.peek_buried):
                while True:
                    try:
                        client.delete(peek())
                    except greenstalk.NotFoundError:
                        break
