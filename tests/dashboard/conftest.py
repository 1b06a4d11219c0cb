"""Fixtures for the dashboard's tests: a hub with one task on the test's broker, and a
dashboard app over it."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")

from starlette.testclient import TestClient

from hubbub import Hub
from hubbub.dashboard import DashboardConfig, create_app
from tests.worker.scratch import wait_until

CSRF = re.compile(r'name="csrf(?:-token)?" (?:value|content)="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def add_tasks(hub: Hub) -> None:
    @hub.task(name="dash.add")
    def add(x: int, y: int) -> int:
        return x + y

    @hub.task(name="dash.boom", retries=0)
    def boom(password: str) -> None:
        raise ValueError(f"cannot reach redis://user:{password}@db:6379/0")


@pytest.fixture
def client_for() -> Iterator[Any]:
    """Opens TestClients (lifespan run) over dashboards; closes them after the test."""
    opened: list[TestClient] = []

    def open_client(hub: Hub, **config: Any) -> TestClient:
        client = TestClient(create_app(hub, DashboardConfig(**config)),
                            follow_redirects=False)
        client.__enter__()
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def sqlite_hub(tmp_path: Path) -> Iterator[Hub]:
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}", lease=5)
    add_tasks(hub)
    try:
        yield hub
    finally:
        hub.close()


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port for the block; yields its URL.
    The server stops (and its thread ends) even when the block fails."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn started", 30)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"
