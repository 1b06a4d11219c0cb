"""Helpers for testing code that uses hubbub, and its pytest plugin.

Without pytest: :func:`drain` runs a worker until the queues are empty, and
:class:`BackgroundWorker` runs one on a thread for the length of a ``with`` block.

With pytest (``pytest -p hubbub.testing``; installed, the plugin loads by itself), three
fixtures:

- ``hubbub_app``: the app's hub, read from the ``hubbub_app`` ini option
  (``hubbub_app = "shop.tasks:hub"``), or override the fixture in a ``conftest.py``; None
  (the default) means a fresh ``Hub()``.
- ``hubbub_hub``: that hub, pointed at a temporary SQLite file (broker and results) for the
  test, and put back as it was afterwards.
- ``hubbub_worker``: a :class:`BackgroundWorker` running ``hubbub_hub``'s tasks on the
  ``hubbub_pool`` ini option's pool (default ``threads``; ``prefork``, ``hybrid`` and
  ``gevent`` need ``hubbub_app``, which child processes import). ``hubbub_worker.drain()``
  waits until everything sent has run, fast-forwarding delayed messages (countdowns, ETAs,
  retry backoff) instead of waiting for them; ``fast_forward()`` makes delayed ones due once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from hubbub.errors import ConfigurationError
from hubbub.hub import Hub
from hubbub.transports.sqlite import SQLiteTransport
from hubbub.worker.loop import WorkerLoop
from hubbub.worker.pools import make_pool
from hubbub.worker.pools.base import Pool

__all__ = ["BackgroundWorker", "drain", "drain_async", "hubbub_app", "hubbub_hub", "hubbub_worker",
           "pytest_addoption"]

POLL = 0.02  # seconds between looks at the queues while waiting
START_TIMEOUT = 60.0  # seconds a worker may take to connect and start its pool


def drain(hub: Hub, queues: Sequence[str] | None = None, *, pool: Pool | None = None,
          timeout: float = 60.0) -> WorkerLoop:
    """Run a worker until ``queues`` have nothing ready, delayed or leased; returns it.

    Raises:
        TimeoutError: the queues did not empty within ``timeout`` seconds.
    """
    worker = WorkerLoop(hub, queues=queues, pool=pool, stop_when_idle=True, grace=timeout)
    asyncio.run(asyncio.wait_for(worker.run(), timeout))
    return worker


async def drain_async(hub: Hub, queues: Sequence[str] | None = None, *,
                      pool: Pool | None = None, timeout: float = 60.0) -> WorkerLoop:
    """``drain`` for async tests."""
    worker = WorkerLoop(hub, queues=queues, pool=pool, stop_when_idle=True, grace=timeout)
    await asyncio.wait_for(worker.run(), timeout)
    return worker


def finish_loop(loop: asyncio.AbstractEventLoop, *, within: float = 30.0) -> None:
    """Close ``loop`` as ``asyncio.run`` does, once what ran on it returned: the tasks a worker
    left behind (a control task still closing its plane on a loaded machine) are cancelled
    and awaited, up to ``within`` seconds, and async generators are shut down, so none is
    destroyed pending or leaves an unclosed connection behind."""
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=within))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


class BackgroundWorker:
    """A worker running ``hub``'s tasks on a thread of this process until ``stop()`` (or the
    end of a ``with`` block), for tests that send tasks and check what they did.

    Args:
        hub: the hub whose tasks run.
        pool: where they run (default: the threads pool; a process pool needs a hub loaded
            by its import path, e.g. with ``hubbub._loader.load_hub``).
        queues: queues to consume (default: the hub's default queue).

    Attributes:
        worker: the ``WorkerLoop``.
    """

    def __init__(self, hub: Hub, *, pool: Pool | None = None,
                 queues: Sequence[str] | None = None) -> None:
        self.hub = hub
        self.worker = WorkerLoop(hub, queues=queues, pool=pool or make_pool("threads", 4),
                                 grace=10.0, lease=min(hub.settings.lease, 10.0))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="hubbub-test-worker",
                                        daemon=True)
        self._failed: BaseException | None = None

    def _serve(self) -> None:
        try:
            self._loop.run_until_complete(self.worker.run())
        except BaseException as exc:  # reported by start() or stop() in the test's thread
            self._failed = exc
        finally:
            finish_loop(self._loop)

    def __enter__(self) -> BackgroundWorker:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Start the worker and wait until it serves.

        Raises:
            HubbubError: the worker could not start (the broker, the pool, a failing
                ``on_process_start`` hook): its own error.
        """
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        # _wiring is set once the transport, the result store and the pools are up.
        while self.worker._wiring is None:
            if not self._thread.is_alive():
                self.stop()  # raises what made it fail
                raise ConfigurationError("the test worker stopped before it served")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the test worker did not start within {START_TIMEOUT}s")
            time.sleep(POLL)

    def stop(self) -> None:
        """Stop the worker gracefully and wait for it.

        Raises:
            HubbubError: what made the worker fail, if it did.
        """
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.worker.stop)
            self._thread.join(60)
        if self._thread.is_alive():
            raise TimeoutError("the test worker did not stop within 60s")
        if not self._loop.is_closed():  # finish_loop closed it, unless it failed
            self._loop.close()
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed

    # -- waiting, without waiting in real time -----------------------------------------

    def fast_forward(self) -> int:
        """Make every delayed message due now (a countdown, an ETA, a retry's backoff), as
        if their time had come; returns how many there were.

        Raises:
            ConfigurationError: the hub's broker is not SQLite (the fixtures' is).
        """
        return self.hub.bridge.run(self._make_due())

    async def _make_due(self) -> int:
        transport = self.hub.open_transport()
        if not isinstance(transport, SQLiteTransport):
            raise ConfigurationError("fast_forward works on the SQLite broker; the hubbub_hub "
                                     "fixture gives one")
        async with transport:
            return await transport.make_due()

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every message sent so far has run and been settled, retries included;
        delayed messages are fast-forwarded rather than waited for.

        Raises:
            TimeoutError: work was left after ``timeout`` seconds (a task that never ends).
            HubbubError: the worker failed.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._failed is not None or not self._thread.is_alive():
                self.stop()
                raise ConfigurationError("the test worker is not running")
            self.fast_forward()
            if self.worker.running == 0 and self._empty():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"work was still queued or running after {timeout}s")
            time.sleep(POLL)

    def _empty(self) -> bool:
        stats = self.hub.bridge.run(self._stats())
        return all(s.ready == 0 and s.delayed == 0 and s.leased == 0 for s in stats)

    async def _stats(self) -> list[Any]:
        client = await self.hub.client()
        return await client.transport.stats(self.worker.queues)


# -- the pytest plugin: its fixtures live in hubbub._pytest_plugin, here so that
# `pytest -p hubbub.testing` finds them; without pytest installed, the helpers above still work.

if importlib.util.find_spec("pytest") is not None:
    # Last: the plugin module builds on BackgroundWorker above.
    from hubbub._pytest_plugin import (
        hubbub_app,
        hubbub_hub,
        hubbub_worker,
        pytest_addoption,
    )
