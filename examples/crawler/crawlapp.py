"""The crawler's tasks: one page fetch each, as an ``async def`` task (for the hybrid pool)
and as a plain blocking one (for the gevent pool).

The hub comes from the environment (``HUBBUB_BROKER``; ``run.py`` points it at an SQLite
file of its own). The tasks keep no result: the server counts what was fetched, and a fetch
that fails for good goes to the dead letters, which ``run.py`` counts.
"""

from __future__ import annotations

import asyncio
import http.client
import weakref
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp

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


# -- blocking: keep-alive connections of the standard library, shared by the greenlets ------
#
# Plain http.client, as blocking code written without a task queue would be; in the gevent
# pool's child the sockets are monkey-patched, so a greenlet waiting for its page lets the
# others run. Connections are kept alive and reused: a new connection per page would leave
# each closed one in TIME_WAIT and run the machine out of ephemeral ports long before
# 200,000 pages. (requests works the same way, at about six times the CPU per page.)

MAX_IDLE = 1000  # connections kept per server, one per greenlet that fetches at once
_idle: dict[str, list[http.client.HTTPConnection]] = {}


def _connection(host: str, port: int) -> http.client.HTTPConnection:
    idle = _idle.setdefault(f"{host}:{port}", [])
    # list.pop() is atomic: two greenlets (or threads) never get the same connection
    return idle.pop() if idle else http.client.HTTPConnection(host, port, timeout=30)


def _give_back(connection: http.client.HTTPConnection) -> None:
    idle = _idle.setdefault(f"{connection.host}:{connection.port}", [])
    if len(idle) < MAX_IDLE:
        idle.append(connection)
    else:
        connection.close()


@hub.task(queue=SYNC_QUEUE, ignore_result=True, retries=2, retry_for=(OSError,))
def fetch_page_sync(url: str) -> int:
    """Fetch one page with blocking http.client calls; the body's size in bytes."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http:// URL: {url!r}")
    connection = _connection(parts.hostname, parts.port or 80)
    try:
        connection.request("GET", parts.path or "/")
        response = connection.getresponse()
        body = response.read()
    except BaseException:
        connection.close()  # in an unknown state: never reused
        raise
    _give_back(connection)
    if response.status != 200:
        raise OSError(f"{url} answered {response.status} {response.reason}")
    return len(body)
