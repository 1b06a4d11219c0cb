"""Helpers for remote control tests: real workers on a background thread, a gate tasks wait on.

``fleet(hub, {"w1": lane_spec, ...})`` runs one ``WorkerLoop`` per name on one event loop of
its own thread (so the test's sync ``hub.control`` calls never block them) and stops every
one of them when the block ends, even on failure, within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from hubbub import Hub
from hubbub.control.registry import Registry
from hubbub.events import WorkerOnline
from hubbub.testing import finish_loop
from hubbub.worker.lane import Lane
from hubbub.worker.loop import WorkerLoop
from hubbub.worker.pools import make_pool
from tests.worker.scratch import wait_until

STOP_WITHIN = 30.0  # seconds the fleet's workers get to stop at the end of a test


@dataclass
class Fleet:
    """Running workers by name, their loop, and what each run ended with."""

    workers: dict[str, WorkerLoop]
    loop: asyncio.AbstractEventLoop
    runs: dict[str, asyncio.Future[None]] = field(default_factory=dict)

    def ended(self, name: str) -> bool:
        return name in self.runs and self.runs[name].done()


Spec = Sequence[tuple[Sequence[str], str, int] | Lane]


def lanes(spec: Spec) -> list[Lane]:
    """Lanes from ``[(queues, pool kind, concurrency) or a Lane, ...]``."""
    return [one if isinstance(one, Lane) else Lane(list(one[0]), make_pool(one[1], one[2]))
            for one in spec]


@contextlib.contextmanager
def fleet(hub: Hub, specs: Mapping[str, Spec],
          *, heartbeat: float = 0.2, grace: float = 10.0) -> Iterator[Fleet]:
    """Run one worker per name of ``specs`` until the block ends."""
    loop = asyncio.new_event_loop()
    workers = {name: WorkerLoop(hub, lanes=lanes(spec), name=name, heartbeat=heartbeat,
                                grace=grace)
               for name, spec in specs.items()}
    result = Fleet(workers, loop)
    started = threading.Event()
    online: set[str] = set()

    def seen(event: object) -> None:
        if isinstance(event, WorkerOnline):
            online.add(event.worker)

    hub.events.subscribe(seen)

    async def main() -> None:
        for name, worker in workers.items():
            result.runs[name] = asyncio.ensure_future(worker.run())
        started.set()
        await asyncio.gather(*result.runs.values(), return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        started.wait(STOP_WITHIN)
        # A worker subscribes to commands before it says it is online.
        wait_until(lambda: online >= workers.keys() or any(r.done() for r in result.runs.values()),
                   "workers online")
        # A broadcast stops waiting once every worker in the registry answered: a worker not
        # yet written there would be missed, so wait for the entries too.
        wait_until(lambda: (names := registered(hub)) is None or names >= workers.keys()
                   or any(r.done() for r in result.runs.values()), "workers registered")
        yield result
    finally:
        for worker in workers.values():
            loop.call_soon_threadsafe(worker.stop)
        thread.join(STOP_WITHIN)
        alive = thread.is_alive()
        if not alive:
            finish_loop(loop)
        assert not alive, "the workers did not stop"
        failed = [f"{n}: {r.exception()!r}" for n, r in result.runs.items()
                  if r.done() and not r.cancelled() and r.exception() is not None]
        assert not failed, failed


def registered(hub: Hub) -> set[str] | None:
    """The names in the hub's worker registry (None when the hub keeps no results)."""
    results = hub.open_results()
    if results is None:
        return None

    async def names() -> set[str]:
        await results.connect()
        try:
            return {info.name for info in await Registry(results).workers()}
        finally:
            await results.close()

    return hub.bridge.run(names())


class Gate:
    """A barrier tasks wait on until the test opens it (bounded, so none hangs forever)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.entered = 0
        self._lock = threading.Lock()

    def wait(self, bound: float = 30.0) -> None:
        with self._lock:
            self.entered += 1
        self.event.wait(bound)

    def open(self) -> None:
        self.event.set()
