"""Fixtures for the dashboard's tests: a hub with one task on the test's broker, and a
dashboard app over it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")

from starlette.testclient import TestClient

from hubbub import Hub
from hubbub.dashboard import DashboardConfig, create_app

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
