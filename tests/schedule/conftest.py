from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_hubbub_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schedule tests see only the settings they pass, never the developer's ``HUBBUB_*``."""
    for key in list(os.environ):
        if key.startswith("HUBBUB_"):
            monkeypatch.delenv(key)
