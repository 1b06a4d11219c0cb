"""Fixtures for the Celery bridge tests: real Celery (from PyPI) against real servers.

Every test gets its own Celery queue name (``hbc-<hex>``) in Redis db 0 and on RabbitMQ, and
cleanup removes only what carries that name (Celery's lists and binding, the bridge's keys,
the result records of the task ids the test registered), so that tests of other developers
sharing the servers are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from tests import brokers
from tests.worker.scratch import scratch_app, serving

REDIS = "redis://127.0.0.1:6379/0"
AMQP = f"amqp://guest:guest@127.0.0.1:{brokers.load('amqp').PORT}/"

APP = textwrap.dedent('''
    import os, time
    from pathlib import Path
    from hubbub import Hub

    hub = Hub({url!r}, results="none")

    @hub.task(name="shop.add")
    def add(x: int, y: int) -> int:
        return x + y

    @hub.task(name="shop.slow_add")
    def slow_add(x: int, y: int, marker: str) -> int:
        with open(marker, "a") as f:  # one line per start: tells the test it runs
            f.write(f"{{os.getpid()}}\\n")
        time.sleep(float(os.environ.get("SLOW_ADD_SECONDS", "3")))
        return x + y

    @hub.task(name="shop.die")
    def die(marker: str) -> None:
        with open(marker, "a") as f:
            f.write("died\\n")
        os._exit(1)  # takes the worker with it (threads pool)

    @hub.task(name="shop.fail", retries=1, retry_backoff=0.1, retry_jitter=False)
    def fail() -> None:
        raise ValueError("no stock")
''')


def require_server(name: str) -> None:
    """Skip locally, fail under CI=true, when ``name``'s server is down."""
    brokers.require(brokers.load(name))


@dataclass
class Names:
    """One test's Celery queue, and the task ids whose results it must remove."""

    queue: str
    ids: list[str] = field(default_factory=list)


@pytest.fixture
def names() -> Iterator[Names]:
    found = Names("hbc-" + uuid.uuid4().hex[:10])
    try:
        yield found
    finally:
        _clean_redis(found)
        _clean_amqp(found)


def _clean_redis(found: Names) -> None:
    if not brokers.reachable("127.0.0.1", 6379):
        return
    client = redis.Redis.from_url(REDIS)
    try:
        doomed = list(client.scan_iter(match=f"*{found.queue}*", count=1000))
        doomed += [f"celery-task-meta-{i}" for i in found.ids]
        if doomed:
            client.delete(*doomed)
    finally:
        client.close()


def _clean_amqp(found: Names) -> None:
    if not brokers.reachable("127.0.0.1", brokers.load("amqp").PORT):
        return
    import aio_pika

    async def clean() -> None:
        async with await aio_pika.connect(AMQP) as conn:
            channel = await conn.channel()
            for name in (found.queue, f"{found.queue}.hubbub.dead"):
                await channel.queue_delete(name)
            await channel.exchange_delete(found.queue)
            # Delay queues expire on their own once unused (x-expires).

    asyncio.run(clean())


@contextlib.contextmanager
def celery_app(broker: str, queue: str) -> Iterator[Any]:
    """A Celery app on ``broker`` with results in Redis db 0, defaulting to ``queue``; its
    connections (broker pool, result backend, result listener) closed when the block ends."""
    from celery import Celery

    app = Celery("hbc", broker=broker, backend=REDIS, set_as_current=False)
    app.conf.update(task_default_queue=queue, broker_connection_retry_on_startup=False,
                    task_serializer="json", accept_content=["json"],
                    result_serializer="json", broker_connection_max_retries=1)
    try:
        yield app
    finally:
        backend = app.backend
        consumer = getattr(backend, "result_consumer", None)
        if consumer is not None:
            consumer.stop()
            # An AsyncResult collected later unsubscribes through it, which would open a
            # new connection that nothing closes (a ResourceWarning in a later test).
            consumer._pubsub = None
        backend.client.connection_pool.disconnect()
        # Celery's close() only drops its broker pool, which is kombu's, shared per URL in
        # the process: close its idle connections (kombu reopens one lazily if it is handed
        # out again), or their sockets are collected with a ResourceWarning in a later test.
        if app._pool is not None:
            from kombu import Connection

            for held in list(app._pool._resource.queue):  # also lazy placeholders
                if isinstance(held, Connection):
                    held.close()
        app.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModuleType]:
    """The hubbub app (tasks named as the Celery side calls them) on an SQLite broker."""
    with scratch_app(tmp_path, APP) as module:
        yield module


@contextlib.contextmanager
def bridge_worker(module: ModuleType, queue: str, broker: str, lease: float = 5
                  ) -> Iterator[Any]:
    """An in-process worker running Celery's ``queue`` (threads), results for Celery in
    Redis db 0; stopped when the block ends, even on failure."""
    from hubbub.compat.celery.bridge import celery_lane
    from hubbub.worker.lane import Lane
    from hubbub.worker.loop import WorkerLoop
    from hubbub.worker.pools import make_pool

    hub = module.hub
    lanes = [Lane([hub.settings.default_queue], make_pool("threads", 1)),
             celery_lane(hub, queue, broker=broker, results=REDIS, pool="threads",
                         concurrency=2)]
    worker = WorkerLoop(hub, lanes=lanes, lease=lease, heartbeat=0.5)
    with serving(worker, stop_within=30) as running:
        yield running


def start(args: list[str], cwd: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """A child process of this test, its output in ``log``, in its own process group."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(cwd), str(Path(__file__).parents[2]), environment.get("PYTHONPATH", "")])
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, env=environment,
                                start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a child this test started: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
