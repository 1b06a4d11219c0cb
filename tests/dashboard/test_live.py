"""Live updates: the server-sent event stream says ``changed`` when a task moves."""

from __future__ import annotations

import threading
import time

import httpx

from hubbub import Hub
from hubbub.control.wire import encode_batch, received_row
from hubbub.dashboard import DashboardConfig, create_app
from hubbub.testing import BackgroundWorker
from tests.dashboard.conftest import serving


def test_the_live_stream_announces_a_task_that_ran(sqlite_hub: Hub) -> None:
    with serving(create_app(sqlite_hub, DashboardConfig())) as url, \
            httpx.Client(base_url=url, timeout=30) as http, \
            http.stream("GET", "/live") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")  # the stream is open and read
        with BackgroundWorker(sqlite_hub):
            sqlite_hub.send_task("dash.add", [1, 2]).get(timeout=30)
            for line in lines:  # ends by the client's read timeout if nothing comes
                if line == "event: changed":
                    break
            else:
                raise AssertionError("the stream ended without a change")


def test_an_event_on_the_plane_is_announced_at_once(sqlite_hub: Hub) -> None:
    async def publish() -> None:
        plane = sqlite_hub.open_plane()
        await plane.connect()
        try:
            batch = encode_batch([received_row(time.time(), "id-1", "dash.add", "default",
                                               "w1")])
            await plane.publish("events", [batch])
        finally:
            await plane.close()

    with serving(create_app(sqlite_hub, DashboardConfig())) as url, \
            httpx.Client(base_url=url, timeout=30) as http, \
            http.stream("GET", "/live") as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        # Nothing else changes here (no queue, no worker, no result): only the event can
        # make the stream speak; published until it does, as the subscription may start late.
        seen = threading.Event()

        def keep_publishing() -> None:
            while not seen.wait(0.3):
                sqlite_hub.bridge.run(publish())

        publisher = threading.Thread(target=keep_publishing, daemon=True)
        publisher.start()
        try:
            for line in lines:
                if line == "event: changed":
                    break
                assert line in ("", ": still here"), line
        finally:
            seen.set()
            publisher.join(10)
