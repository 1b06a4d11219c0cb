"""A time bound on a broker call that every networked transport shares."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from hubbub.errors import TransportUnavailable


@contextlib.asynccontextmanager
async def bounded(seconds: float, message: Callable[[], str]) -> AsyncIterator[None]:
    """Bound the block by ``seconds``: a broker that stops answering must not hang the caller.

    Raises:
        TransportUnavailable: with ``message()``, made when the block timed out (so that it
            names the server tried last); what the block sent may still arrive.
    """
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise TransportUnavailable(message()) from exc
