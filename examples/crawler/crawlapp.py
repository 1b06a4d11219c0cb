"""The crawler's tasks: one page fetch each, as an ``async def`` task (for the hybrid pool)
and as a plain blocking one (for the gevent pool).

The hub comes from the environment (``HUBBUB_BROKER``; ``run.py`` points it at an SQLite
file of its own). The tasks keep no result: the server counts what was fetched, and a fetch
that fails for good goes to the dead letters, which ``run.py`` counts.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator

import aiohttp
import requests
from requests.adapters import HTTPAdapter

from hubbub import Hub

hub = Hub()

ASYNC_QUEUE = "pages_async"
SYNC_QUEUE = "pages_sync"

# -- async: one aiohttp session per event loop ------------------------------------------------
#
# Each hybrid child runs its own loop. Its session is kept between tasks, so pages are fetched
# over reused keep-alive connections, and closed when the loop ends: an async generator holds
# it, and asyncio.run() closes the loop's open async generators before it closes the loop.

_sessions: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, AsyncIterator[None]]
] = weakref.WeakKeyDictionary()


async def _closed_with_the_loop(session: aiohttp.ClientSession) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await session.close()


async def _session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    held = _sessions.get(loop)
    if held is None:
        # limit=0: as many connections as tasks run at once (--coroutines)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        keeper = _closed_with_the_loop(session)
        held = _sessions[loop] = (session, keeper)
        await anext(keeper)
    return held[0]


@hub.task(queue=ASYNC_QUEUE, ignore_result=True, retries=2, retry_for=(OSError,))
async def fetch_page(url: str) -> int:
    """Fetch one page with aiohttp; the body's size in bytes."""
    session = await _session()
    async with session.get(url) as response:
        response.raise_for_status()
        return len(await response.read())


# -- blocking: one requests.Session per process, shared by its greenlets ----------------------

_shared: list[requests.Session] = []
_shared_lock = threading.Lock()  # a greenlet lock once gevent has patched threading


def _requests_session() -> requests.Session:
    with _shared_lock:
        if not _shared:
            session = requests.Session()
            # Keep up to 1,000 connections alive, one per greenlet that fetches at once; a
            # new connection per page would run the machine out of ephemeral ports.
            session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1000))
            _shared.append(session)
        return _shared[0]


@hub.task(queue=SYNC_QUEUE, ignore_result=True, retries=2, retry_for=(OSError,))
def fetch_page_sync(url: str) -> int:
    """Fetch one page with requests (blocking code; sockets are monkey-patched in the gevent
    pool's child, so a greenlet waiting for its page lets the others run); the body's size."""
    response = _requests_session().get(url, timeout=30)
    response.raise_for_status()
    return len(response.content)
