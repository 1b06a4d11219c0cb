"""The worker: ``WorkerLoop`` and ``run_worker`` (signals, for the CLI and scripts)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterator, Sequence
from types import ModuleType
from typing import Any, Protocol, TypeVar

from hubbub.errors import ConfigurationError
from hubbub.settings import LOOPS, loop_from_environment
from hubbub.worker.loop import WorkerLoop

__all__ = ["Companion", "WorkerLoop", "event_loop", "fewer_collections", "run_on", "run_worker"]

T = TypeVar("T")

log = logging.getLogger("hubbub.worker")
COMPANION_STOP = 10.0  # seconds companions get to stop after the worker did
YOUNG_COLLECTION = 2000  # net allocations between young collections (gc threshold 0)
MIDDLE_COLLECTION = 50  # young collections between middle ones (gc threshold 1)


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


def event_loop(choice: str = "auto") -> str:
    """What the event loop ``choice`` (``auto``, ``asyncio`` or ``uvloop``) means here:
    ``auto`` is uvloop when it can be imported, else asyncio's own loop.

    Raises:
        ConfigurationError: an unknown choice, or ``uvloop`` when it is not installed.
    """
    if choice not in LOOPS:
        raise ConfigurationError(f"loop must be one of {', '.join(LOOPS)}, not {choice!r}")
    if choice == "asyncio":
        return "asyncio"
    if _uvloop() is not None:
        return "uvloop"
    if choice == "uvloop":
        raise ConfigurationError("event loop 'uvloop' needs an extra: "
                                 "pip install 'hubbub[uvloop]'")
    return "asyncio"


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Tune the garbage collector for serving many short tasks, until the block ends.

    What is alive now (the app, its modules, hubbub) lives as long as the process: keep it out
    of the collector's passes (``gc.freeze``), which would walk it again and again while
    thousands of tasks come and go (bench/fanout.py; it also keeps those pages shared after a
    fork). And collect less often: a thousand tasks in flight are tens of thousands of young
    objects (tasks, coroutines, envelopes) that live for the task's length, and the default
    thresholds (700, 10) walk them again in a second-generation pass every ~7,000
    allocations: about 5 µs of CPU per task on bench/fanout.py, an eighth of the loop's.
    2,000 is CPython 3.13's own first threshold; the hand-out path makes no cyclic garbage
    (what a failing task leaves, a traceback's frames, is still collected young).
    """
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], YOUNG_COLLECTION), max(thresholds[1], MIDDLE_COLLECTION))
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def run_on(loop: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(main())``, on a new loop of the kind ``event_loop(loop)`` names.

    Raises:
        ConfigurationError: as ``event_loop``.
    """
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if event_loop(loop) == "uvloop":
        uvloop = _uvloop()
        assert uvloop is not None  # event_loop saw it
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def _uvloop() -> ModuleType | None:
    """The uvloop module (the ``hubbub[uvloop]`` extra), imported by a process that may run
    on it only; None when it is not installed."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def run_worker(worker: WorkerLoop, companions: Sequence[Companion] = (), *,
               loop: str | None = None) -> None:
    """Run ``worker`` (and ``companions`` beside it) in this thread until SIGTERM/SIGINT.

    The first signal stops gracefully (release unstarted work, wait up to ``grace`` for
    running tasks); a second one releases running work too and exits. Companions are told
    to stop when the worker stops.

    Args:
        worker: the worker to run.
        companions: what runs beside it on its loop (an embedded beat).
        loop: the event loop, ``auto``, ``asyncio`` or ``uvloop`` (default:
            ``$HUBBUB_LOOP``, else ``auto``: uvloop when it is installed). uvloop
            runs the loop's own work (timers, sockets, callbacks) in C: with thousands of
            short ``async def`` tasks, less CPU per task (docs/pools.md, "The event loop").

    Raises:
        ConfigurationError: ``uvloop`` asked for but not installed, or ``$HUBBUB_LOOP``
            names no loop; before anything starts.
    """
    kind = event_loop(loop or loop_from_environment() or "auto")

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

    with fewer_collections():
        run_on(kind, main)
    if worker.abandoned:
        # Threads still running abandoned tasks would hold the interpreter open at exit; their
        # deliveries were released, so leave without waiting for them.
        logging.shutdown()
        os._exit(0)


