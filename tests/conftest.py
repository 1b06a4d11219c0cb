from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hubbub.transports import Transport, open_transport
from tests import brokers


@dataclass
class Broker:
    """One isolated namespace on one broker for one test; opens connected transports."""

    name: str
    url: str
    results_url: str | None
    capabilities: object = None
    opened: list[Transport] = field(default_factory=list)

    async def open(self) -> Transport:
        transport = open_transport(self.url)
        await transport.connect()
        self.opened.append(transport)
        return transport


def _broker_params() -> list[object]:
    return [pytest.param(name, id=name) for name in brokers.NAMES if brokers.available(name)]


@pytest.fixture(params=_broker_params())
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    module = brokers.load(request.param)
    brokers.require(module)
    run_id = "t" + uuid.uuid4().hex[:10]
    url = module.make_url(tmp_path, run_id)
    b = Broker(request.param, url, module.results_url(tmp_path, run_id))
    try:
        yield b
    finally:
        for transport in b.opened:
            with contextlib.suppress(Exception):
                await transport.close()
        await module.cleanup(url)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until ``check()`` is true, failing after ``timeout`` seconds."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
