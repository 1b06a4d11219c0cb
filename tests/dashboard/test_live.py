"""Live updates: the server-sent event stream says ``changed`` when a task moves."""

from __future__ import annotations

import httpx

from hubbub import Hub
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
