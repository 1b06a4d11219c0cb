from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub import Hub


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    """A hub on a fresh SQLite file: the embedded default, shared by every worker test."""
    h = Hub(f"sqlite:///{tmp_path / 'hub.db'}", lease=5)
    try:
        yield h
    finally:
        h.close()
