"""The app the fault scenarios run in real worker processes.

Workers load it with ``-A tests.faults.faultapp:hub``: ``hub`` is built on first access from
``$HUBBUB_BROKER``/``$HUBBUB_RESULTS`` (and the other ``HUBBUB_*`` the test sets), so the test
process can import this module and build its own producer hub with :func:`build` without a
hub being made from its environment. Every task writes to the ledger named by
``$FAULTS_LEDGER`` (not ``HUBBUB_*``: the settings reject unknown names there).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

from hubbub import Hub
from tests.faults.ledger import record

LEDGER_ENV = "FAULTS_LEDGER"


def _ledger() -> str:
    return os.environ[LEDGER_ENV]


def work(key: str, seconds: float = 0.0) -> str:
    """Blocking work: ``start``, sleep, ``done``."""
    record(_ledger(), "start", key)
    if seconds:
        time.sleep(seconds)
    record(_ledger(), "done", key)
    return key


async def awork(key: str, seconds: float = 0.0) -> str:
    """Non-blocking work for the async pool: ``start``, ``await sleep``, ``done``."""
    record(_ledger(), "start", key)
    if seconds:
        await asyncio.sleep(seconds)
    record(_ledger(), "done", key)
    return key


def first_slow(key: str, seconds: float = 0.0) -> str:
    """Like ``work``, but only the first run of ``key`` (by the ledger) sleeps: its retry
    after a crash finishes at once."""
    with open(_ledger(), "rb") as f:
        ran = any(f'"e":"start","k":{json.dumps(key)},'.encode() in line for line in f)
    return work(key, 0.0 if ran else seconds)


def suicide(key: str, seconds: float = 0.0) -> None:
    """Poison: kills the process that runs it, every time (the worker itself on solo)."""
    record(_ledger(), "start", key)
    os.kill(os.getpid(), signal.SIGKILL)


def build(broker: str | None = None, **options: Any) -> Hub:
    """A hub with every fault task registered under a fixed name."""
    hub = Hub(broker, **options)
    hub.task(name="faults.work")(work)
    hub.task(name="faults.awork")(awork)
    hub.task(name="faults.suicide")(suicide)
    hub.task(name="faults.first_slow")(first_slow)
    # Retried once if the process running it dies (prefork/hybrid only).
    hub.task(name="faults.first_slow_retry_crash", on_crash="retry", retries=1,
             retry_backoff=0.1, retry_jitter=False)(first_slow)
    return hub


_hub: Hub | None = None


def __getattr__(name: str) -> Any:
    global _hub
    if name == "hub":
        if _hub is None:
            _hub = build()
        return _hub
    raise AttributeError(name)
