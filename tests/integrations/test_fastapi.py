"""``hubbub.fastapi``: the lifespan opens the hub on the app's loop, ``delay_async`` sends from
it with no hop to the bridge thread, and ``HubDep`` gives endpoints the hub."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from hubbub import ConfigurationError, Hub, Result
from hubbub.fastapi import HubDep, lifespan
from hubbub.testing import drain


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app on this test's loop, its lifespan running, as an ASGI server would run it."""
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://shop") as client:
        yield client


def make_app(hub: Hub) -> FastAPI:
    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    app = FastAPI(lifespan=lifespan(hub))

    @app.post("/add/{x}/{y}")
    async def send(x: int, y: int, hub: HubDep) -> dict[str, Any]:
        result = await add.delay_async(x, y)
        return {"id": result.id, "broker": hub.settings.broker}

    @app.get("/results/{task_id}")
    def state(task_id: str, hub: HubDep) -> dict[str, Any]:
        result: Result[int] = Result(hub, task_id, add.name)
        return {"state": str(result.state), "value": result.result}

    return app


async def test_async_endpoints_send_from_the_apps_loop_without_the_bridge(
    tmp_path: Path,
) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'api.db'}")
    app = make_app(hub)
    async with serving(app) as web:
        ids = [(await web.post(f"/add/{i}/{i}")).json()["id"] for i in range(5)]
        # Sent on the app's own loop: the hub's bridge thread was never started for it.
        assert hub.bridge._loop is None
    await asyncio.to_thread(drain, hub, timeout=30)
    async with serving(app) as web:
        states = [(await web.get(f"/results/{i}")).json() for i in ids]
    assert states == [{"state": "SUCCESS", "value": 2 * i} for i in range(5)]
    hub.close()


async def test_delay_async_outside_a_lifespan_sends_from_the_loop_too(tmp_path: Path) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'api.db'}")

    @hub.task
    async def double(x: int) -> int:
        return 2 * x

    result = await double.delay_async(21)  # the loop's own connections, opened now
    assert hub.bridge._loop is None  # no hop to the bridge thread
    async with hub.connected(), hub.connected():  # nested: the same connections
        later = await double.options(priority=5).delay_async(4)
    await asyncio.to_thread(drain, hub, timeout=30)
    assert await result.wait(timeout=10) == 42
    assert await later.wait(timeout=10) == 8
    with pytest.raises(TypeError, match="cannot be sent with these arguments"):
        await double.delay_async(1, 2)  # type: ignore[call-arg]
    hub.close()


async def test_an_app_without_the_lifespan_is_told_how_to_get_one() -> None:
    app = FastAPI()

    @app.get("/")
    def index(hub: HubDep) -> str:
        return str(hub)

    async with serving(app) as web:
        with pytest.raises(ConfigurationError, match=r"lifespan=hubbub\.fastapi\.lifespan"):
            await web.get("/")
