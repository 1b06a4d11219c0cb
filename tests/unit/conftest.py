from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from hubbub import Hub
from hubbub import codecs as codecs_module
from tests.unit.fakes import FakeResults


@pytest.fixture(autouse=True)
def _no_hubbub_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests see only the settings they pass, never the developer's ``HUBBUB_*``."""
    for key in list(os.environ):
        if key.startswith("HUBBUB_"):
            monkeypatch.delenv(key)


@pytest.fixture
def hub() -> Iterator[Hub]:
    """A hub on the in-memory broker; nothing here connects it."""
    h = Hub("memory://test-unit")
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(params=["orjson", "stdlib"])
def json_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once with orjson and once with the standard-library fallback."""
    if request.param == "orjson":
        orjson = pytest.importorskip("orjson")
        monkeypatch.setattr(codecs_module, "_orjson", orjson)
    else:
        monkeypatch.setattr(codecs_module, "_orjson", None)
    return str(request.param)


@pytest.fixture
def client() -> Iterator[FakeResults]:
    """A results client that is not a Hub, with a bridge of its own."""
    fake = FakeResults()
    try:
        yield fake
    finally:
        fake.bridge.stop()
