"""Fixtures shared by the transport tests that run on the embedded and the Redis broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import brokers


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A broker URL of its own (an SQLite file, or a key prefix on the shared Redis), removed
    afterwards. A test module with a ``url`` of its own (another broker) overrides it."""
    module = brokers.load(request.param)
    brokers.require(module)
    made = module.make_url(tmp_path, "t" + uuid.uuid4().hex[:10])
    try:
        yield made
    finally:
        asyncio.run(module.cleanup(made))
