"""Fleet metrics from the store (what the dashboard serves at ``/metrics``)."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from hubbub.metrics import FleetMetrics, WorkerMetrics, fleet_metrics_app
from hubbub.worker.loop import WorkerLoop
from hubbub.worker.pools import make_pool
from tests.worker.scratch import running_worker, scratch_app, serving, wait_until

SOURCE = "from hubbub import Hub\nhub = Hub({url!r}, lease=5)\n@hub.task\ndef add(x, y):\n" \
         "    return x + y\n"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(body: bytes) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


async def get(app: Any) -> tuple[int, bytes, dict[bytes, bytes]]:
    """One GET of an ASGI app, as a server would make it."""
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": "/metrics", "headers": []},
              receive, send)
    start, body = sent
    return start["status"], body["body"], dict(start["headers"])


def test_fleet_metrics_show_live_workers_and_queue_depths(tmp_path: Path) -> None:
    with scratch_app(tmp_path, SOURCE, "fleetapp") as app:
        for i in range(3):
            app.add.apply_async((i, i), queue="later")  # no worker consumes it
        with running_worker(app, "async") as worker:
            assert app.add.delay(1, 2).get(timeout=30) == 3

            async def read() -> Samples:
                fleet = FleetMetrics(app.hub, ["later"], every=0.0)
                try:
                    return parse((await fleet.render())[0])
                finally:
                    await fleet.close()

            samples: Samples = {}

            def seen() -> bool:  # the registry entry is written by the first heartbeat
                samples.update(asyncio.run(read()))
                return samples.get(("hubbub_worker_processed_total",
                                    (("worker", worker.name),))) == 1.0

            wait_until(seen, "the worker's registry entry with its one task")
            assert samples[("hubbub_workers_up", ())] == 1.0
            assert samples[("hubbub_queue_depth", (("queue", "later"), ("state", "ready")))] == 3
            assert samples[("hubbub_queue_depth", (("queue", "default"),
                                                   ("state", "ready")))] == 0
            slots = ("hubbub_pool_slots", (("lane", "default"), ("pool", "async"),
                                           ("worker", worker.name)))
            assert samples[slots] == 1  # running_worker gives one slot

            async def scrape_app() -> tuple[int, bytes, dict[bytes, bytes]]:
                asgi = fleet_metrics_app(app.hub, ["later"])
                try:
                    return await get(asgi)
                finally:
                    await asgi.fleet.close()  # type: ignore[attr-defined]

            status, body, headers = asyncio.run(scrape_app())
            assert status == 200
            assert headers[b"content-type"].startswith(b"text/plain")
            assert parse(body)[("hubbub_workers_up", ())] == 1.0


def test_the_fleet_app_answers_503_when_the_store_cannot_be_read(tmp_path: Path) -> None:
    source = "from hubbub import Hub\nhub = Hub('redis://127.0.0.1:1/0')\n"
    with scratch_app(tmp_path, source, "downapp") as app:
        status, body, _ = asyncio.run(get(fleet_metrics_app(app.hub)))
    assert status == 503
    assert body.startswith(b"metrics cannot be read: ")


def test_a_workers_queue_depths_are_read_when_scraped_and_reused_within_depth_every(
        tmp_path: Path) -> None:
    with scratch_app(tmp_path, SOURCE, "depthapp") as app:
        metrics = WorkerMetrics(0, depth_every=3600.0)
        worker = WorkerLoop(app.hub, pool=make_pool("async", 1), metrics=metrics)
        delayed = ("hubbub_queue_depth", (("queue", "default"), ("state", "delayed")))
        with serving(worker):
            wait_until(lambda: metrics.port != 0, "the metrics server")
            url = f"http://127.0.0.1:{metrics.port}/metrics"
            assert scrape(url)[delayed] == 0.0
            for i in range(3):
                app.add.apply_async((i, i), countdown=600)
            assert scrape(url)[delayed] == 0.0  # read less than depth_every ago: reused
            metrics._depths.every = 0.0  # now every scrape reads the broker
            assert scrape(url)[delayed] == 3.0


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        return parse(response.read())
