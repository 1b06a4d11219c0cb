"""The worker: ``WorkerLoop`` and ``run_worker`` (signals, for the CLI and scripts)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from hubbub.worker.loop import WorkerLoop

__all__ = ["WorkerLoop", "run_worker"]

log = logging.getLogger("hubbub.worker")


def run_worker(worker: WorkerLoop) -> None:
    """Run ``worker`` in this thread until SIGTERM/SIGINT.

    The first signal stops gracefully (release unstarted work, wait up to ``grace`` for
    running tasks); a second one releases running work too and exits.
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            name = signal.Signals(signum).name
            if signals == 1:
                log.warning("%s: stopping gracefully (send again to stop at once)", name)
                worker.stop()
            else:
                log.warning("%s again: releasing running tasks and exiting", name)
                worker.abort()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await worker.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    asyncio.run(main())
    if worker.abandoned:
        # Threads still running abandoned tasks would hold the interpreter open at exit; their
        # deliveries were released, so leave without waiting for them.
        logging.shutdown()
        os._exit(0)


