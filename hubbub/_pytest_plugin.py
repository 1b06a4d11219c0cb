"""The fixtures of hubbub's pytest plugin; loaded through :mod:`hubbub.testing`, whose
docstring says what they give."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub._loader import load_hub
from hubbub.hub import Hub
from hubbub.testing import BackgroundWorker
from hubbub.worker.pools import make_pool

__all__ = ["hubbub_app", "hubbub_hub", "hubbub_worker", "pytest_addoption"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("hubbub_app", "The app's hub as module:attr for hubbub's fixtures "
                  "(default: a fresh Hub).", default="")
    parser.addini("hubbub_pool", "The pool of the hubbub_worker fixture (default: threads).",
                  default="threads")


@pytest.fixture
def hubbub_app(pytestconfig: pytest.Config) -> Hub | None:
    """The app's hub (the ``hubbub_app`` ini option), or None for a fresh one; override it
    in a conftest.py to return your hub."""
    path = str(pytestconfig.getini("hubbub_app") or "")
    return load_hub(path) if path else None


@pytest.fixture
def hubbub_hub(hubbub_app: Hub | None, tmp_path: Path) -> Iterator[Hub]:
    """``hubbub_app`` (or a fresh hub) on a temporary SQLite broker and result store."""
    url = f"sqlite:///{tmp_path / 'hubbub-test.db'}"
    if hubbub_app is None:
        hub = Hub(url, results=url)
        try:
            yield hub
        finally:
            hub.close()
        return
    # Re-point the app's hub for this test, then put its settings back as the code set them.
    saved = dict(hubbub_app._code)
    hubbub_app.close()
    hubbub_app.configure(broker=url, results=url)
    try:
        yield hubbub_app
    finally:
        hubbub_app.close()
        hubbub_app._code = saved
        hubbub_app._settle()


@pytest.fixture
def hubbub_worker(hubbub_hub: Hub, pytestconfig: pytest.Config) -> Iterator[BackgroundWorker]:
    """A worker running ``hubbub_hub``'s tasks for the test (pool: the ``hubbub_pool`` ini
    option); ``drain()`` waits for what was sent, ``fast_forward()`` skips delays."""
    kind = str(pytestconfig.getini("hubbub_pool") or "threads")
    pool = make_pool(kind, 2)
    with BackgroundWorker(hubbub_hub, pool=pool) as worker:
        yield worker
