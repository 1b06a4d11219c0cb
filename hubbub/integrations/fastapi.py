"""FastAPI (and any ASGI app with a lifespan): open the hub with the app, send from
``async def`` endpoints without blocking or a thread hop, and get the hub by dependency.

::

    from fastapi import FastAPI
    from hubbub.fastapi import HubDep, lifespan
    from shop.tasks import hub, resize

    app = FastAPI(lifespan=lifespan(hub))

    @app.post("/images/{name}/resize")
    async def start_resize(name: str, hub: HubDep) -> dict[str, str]:
        result = await resize.delay_async(name)     # from this loop, straight to the broker
        return {"id": result.id}

The lifespan opens the hub's producer connections on the app's event loop
(``Hub.connected``) as the app starts, so that a broker that cannot be reached fails the
start, and closes them when the app stops; ``await task.delay_async(...)`` publishes from
that loop with no hop to another thread. An app with a lifespan of its
own opens the hub inside it: ``async with hub.connected(): yield``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

from fastapi import Depends, Request

from hubbub.errors import ConfigurationError
from hubbub.hub import Hub

__all__ = ["HubDep", "get_hub", "lifespan"]

STATE_KEY = "hubbub"  # the attribute of app.state the lifespan sets


def lifespan(hub: Hub) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan for ``FastAPI(lifespan=...)`` (or Starlette) that opens ``hub`` on the
    app's event loop while the app runs and makes it the app's hub for :func:`get_hub`.

    Args:
        hub: the app's hub.

    Returns:
        The lifespan function.
    """

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        setattr(app.state, STATE_KEY, hub)
        try:
            async with hub.connected():
                yield
        finally:
            hub.close()  # the bridge's connections too, if sync code in the app used them

    return run


def get_hub(request: Request) -> Hub:
    """The app's hub, for ``Depends(get_hub)`` (or the ``HubDep`` annotation).

    Raises:
        ConfigurationError: the app was made without ``lifespan=hubbub.fastapi.lifespan(hub)``.
    """
    hub = getattr(request.app.state, STATE_KEY, None)
    if not isinstance(hub, Hub):
        raise ConfigurationError("this app has no hub: make it with "
                                 "FastAPI(lifespan=hubbub.fastapi.lifespan(hub))")
    return hub


HubDep = Annotated[Hub, Depends(get_hub)]
"""An endpoint parameter annotated ``hub: HubDep`` receives the app's hub."""
