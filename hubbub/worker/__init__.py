"""The worker: ``WorkerLoop`` and ``run_worker`` (signals, for the CLI and scripts)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Sequence
from typing import Protocol

from hubbub.worker.loop import WorkerLoop

__all__ = ["Companion", "WorkerLoop", "run_worker"]

log = logging.getLogger("hubbub.worker")
COMPANION_STOP = 10.0  # seconds companions get to stop after the worker did


class Companion(Protocol):
    """Something that runs beside a worker on its loop, e.g. an embedded beat."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


def signalled(worker: WorkerLoop, name: str) -> None:
    """SIGTERM or SIGINT ``name`` reached ``worker``: the first stop is graceful; a signal
    while it is stopping, whoever asked first (a signal, or ``hubbub control shutdown``),
    releases running work too and exits."""
    if worker.stopping:
        log.warning("%s while stopping: releasing running tasks and exiting", name)
        worker.abort()
    else:
        log.warning("%s: stopping gracefully (send again to stop at once)", name)
        worker.stop()


def run_worker(worker: WorkerLoop, companions: Sequence[Companion] = ()) -> None:
    """Run ``worker`` (and ``companions`` beside it) in this thread until SIGTERM/SIGINT.

    The first signal stops gracefully (release unstarted work, wait up to ``grace`` for
    running tasks); a second one releases running work too and exits. Companions are told
    to stop when the worker stops.
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled, worker, signal.Signals(sig).name)
        beside = [asyncio.create_task(c.run()) for c in companions]
        try:
            await worker.run()
        finally:
            for companion in companions:
                companion.stop()
            if beside:
                await asyncio.wait(beside, timeout=COMPANION_STOP)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    # What is alive now (the app, its modules, hubbub) lives as long as the process: keep it
    # out of the collector's passes, which would walk it again and again while thousands of
    # tasks come and go (bench/fanout.py; it also keeps those pages shared after a fork).
    gc.freeze()
    asyncio.run(main())
    if worker.abandoned:
        # Threads still running abandoned tasks would hold the interpreter open at exit; their
        # deliveries were released, so leave without waiting for them.
        logging.shutdown()
        os._exit(0)


