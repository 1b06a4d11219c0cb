"""Helpers for worker tests that need a real app module and a real worker.

``scratch_app`` writes an app's source into a scratch folder that child processes can import,
the way ``hubbub worker -A`` finds a user's app; ``running_worker`` runs a one-slot worker on
its own thread for the length of a ``with`` block; ``wait_until`` polls a condition with a
deadline.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from hubbub._loader import load_hub
from hubbub.testing import finish_loop
from hubbub.worker.loop import WorkerLoop
from hubbub.worker.pools import make_pool


@contextmanager
def scratch_app(folder: Path, source: str, prefix: str = "app") -> Iterator[ModuleType]:
    """Write ``source`` (with ``{url}`` for an SQLite broker in ``folder``) as a module in
    ``folder``, put it on ``sys.path`` and load it as ``-A`` would.

    Yields the module: its ``hub`` (with ``import_path`` set) and its tasks. The module name
    is unique, so a test never sees another test's app in ``sys.modules``.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(source.format(url=f"sqlite:///{folder / 'hub.db'}"))
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
    with serving(WorkerLoop(app.hub, pool=make_pool(pool, 1, **options), prefetch=1)) as worker:
        yield worker


@contextmanager
def serving(worker: WorkerLoop, *, stop_within: float = 60.0) -> Iterator[WorkerLoop]:
    """Run ``worker`` on an event loop of its own thread until the block ends; then stop it,
    wait up to ``stop_within`` seconds, and fail the test if it did not stop or raised."""
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
        thread.join(stop_within)
        alive = thread.is_alive()
        if not alive:
            finish_loop(loop)
        assert not alive, "the worker did not stop"
        assert not failed, failed


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.02)
