"""Per-key rate limits (``rate_limit_key``): each key its own budget of starts, kept in the
store for the fleet, on memory, SQLite and Redis, with a worker in this process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from hubbub import Hub, State
from hubbub.testing import drain
from hubbub.worker.pools import make_pool
from tests.limits.conftest import Place, place_params

PLACES = place_params("memory", "sqlite", "redis")


@pytest.fixture
def hub(place: Place) -> Iterator[Hub]:
    h = Hub(place.url, results=place.results, lease=5)
    try:
        yield h
    finally:
        h.close()


@pytest.mark.parametrize("place", PLACES, indirect=True)
def test_each_key_has_its_own_budget_of_starts(hub: Hub) -> None:
    starts: dict[str, list[float]] = {"acme": [], "globex": []}
    lock = threading.Lock()

    @hub.task(rate_limit="2/s", rate_limit_key="customer")
    def sync(customer: str, page: int) -> None:
        with lock:
            starts[customer].append(time.monotonic())

    sync.delay_many([(customer, page) for page in range(3) for customer in starts])
    drain(hub, pool=make_pool("threads", 6), timeout=60)
    for customer, seen in starts.items():
        assert len(seen) == 3, customer
        # Two intervals of 0.5 s between a key's first and last start, however loaded.
        assert max(seen) - min(seen) >= 2 * 0.5 - 0.05, customer
    everything = [t for seen in starts.values() for t in seen]
    # One budget for both keys would spread the six starts over five intervals (2.5 s).
    assert max(everything) - min(everything) < 2.0


@pytest.mark.parametrize("place", PLACES, indirect=True)
def test_a_rate_set_at_runtime_holds_for_each_key_of_a_keyed_task(hub: Hub) -> None:
    starts: dict[str, list[float]] = {"acme": [], "globex": []}
    lock = threading.Lock()

    @hub.task(rate_limit="1/h", rate_limit_key=lambda customer, page: customer.upper())
    def sync(customer: str, page: int) -> None:
        with lock:
            starts[customer].append(time.monotonic())

    hub.bridge.run(hub.set_rate_limit(sync.name, "4/s"))  # 1/h would take hours
    sync.delay_many([(customer, page) for page in range(3) for customer in starts])
    drain(hub, pool=make_pool("threads", 6), timeout=60)
    for customer, seen in starts.items():
        assert len(seen) == 3, customer
        assert max(seen) - min(seen) >= 2 * 0.25 - 0.05, customer
    everything = [t for seen in starts.values() for t in seen]
    assert max(everything) - min(everything) < 5 * 0.25  # not one budget for both keys


@pytest.mark.parametrize("place", place_params("memory"), indirect=True)
def test_a_rate_limit_key_that_cannot_be_derived_dead_letters_the_task(hub: Hub) -> None:
    ran = threading.Event()

    def broken_key(customer: str) -> str:
        raise KeyError(customer)

    @hub.task(rate_limit="10/s", rate_limit_key=broken_key)
    def sync(customer: str) -> None:
        ran.set()

    result = sync.delay("acme")
    drain(hub, timeout=30)
    assert not ran.is_set()
    assert result.state == State.FAILURE
    record = result.record()
    assert record is not None
    assert record.error is not None
    assert "rate_limit_key cannot be derived" in record.error.message
