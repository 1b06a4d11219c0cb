"""A worker is in the registry before it says it is online, so that a broadcast sent once it
is up (which waits for the workers in the registry) waits for it too."""

from __future__ import annotations

import uuid

from hubbub import Hub
from hubbub.events import WorkerOnline
from tests.control.fleet import fleet, registered


def test_a_worker_is_registered_before_it_says_it_is_online() -> None:
    name = f"memory://order-{uuid.uuid4().hex[:8]}"
    hub = Hub(name, results=name)
    seen: dict[str, set[str] | None] = {}

    def online(event: object) -> None:
        if isinstance(event, WorkerOnline):  # on the worker's own loop, at the moment it says so
            seen[event.worker] = registered(hub)

    hub.events.subscribe(online)
    try:
        with fleet(hub, {"w1": [(["a"], "threads", 1)], "w2": [(["b"], "threads", 1)]}):
            replies = hub.control.ping(timeout=10)
    finally:
        hub.close()
    assert seen.keys() == {"w1", "w2"}
    assert all(names is not None and worker in names for worker, names in seen.items()), seen
    assert sorted(r.worker for r in replies) == ["w1", "w2"]
