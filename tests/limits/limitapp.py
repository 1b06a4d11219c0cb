"""The app the limit tests run in real worker processes (``-A tests.limits.limitapp:hub``).

Its tasks are the fault suite's (``tests/faults/faultapp.py``): each writes ``start`` and
``done`` lines to the ledger named by ``$FAULTS_LEDGER``, so the tests judge what ran, when and
how many at once from the ledger, not from hubbub. ``hub`` is built on first access from
``$HUBBUB_BROKER``/``$HUBBUB_RESULTS``; a test builds its producer with :func:`build`.
"""

from __future__ import annotations

from typing import Any

from hubbub import Hub
from tests.faults.faultapp import first_slow, work

RATE = "50/s"


def work_for(key: str, customer: str, seconds: float = 0.0) -> str:
    """``work`` for one customer (the key of a per-customer concurrency limit)."""
    return work(key, seconds)


def build(broker: str | None = None, **options: Any) -> Hub:
    """A hub with every limited task registered under a fixed name."""
    hub = Hub(broker, **options)
    hub.task(name="limits.paced", rate_limit=RATE)(work)
    hub.task(name="limits.pair", concurrency=2)(work)
    hub.task(name="limits.one_at_a_time", concurrency=1)(first_slow)
    hub.task(name="limits.per_customer", concurrency=1, concurrency_key="customer")(work_for)
    hub.task(name="limits.unlimited")(work)
    return hub


_hub: Hub | None = None


def __getattr__(name: str) -> Any:
    global _hub
    if name == "hub":
        if _hub is None:
            _hub = build()
        return _hub
    raise AttributeError(name)
