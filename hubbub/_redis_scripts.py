"""Lua scripts run many at a time, on one Redis or on a Redis Cluster.

A plain pipeline holds each script call and sends them in one round trip. A cluster client
refuses scripts in a pipeline (their keys may lie on different masters), so there each call
goes on its own, concurrently, to its keys' master: every call must name keys of one slot
(one hash tag). Those calls in flight are capped, across every caller of one client, at a
quarter of one node's pool (:data:`_AT_ONCE` at most): one call per key of a batch of
thousands would otherwise ask for more connections than the pool holds, and redis-py fails
the whole batch with MaxConnectionsError. Either way, a call that found its script missing
(Redis restarted and forgot it) is sent again once the script is loaded, and only that call:
the others already ran.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

_SHAS: dict[str, str] = {}  # script source -> its SHA1, for EVALSHA
_AT_ONCE = 32  # the most script calls in flight on one cluster client
# One cap per cluster client, shared by its callers (a client belongs to one event loop).
_CAPS: weakref.WeakKeyDictionary[Any, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def sha_of(source: str) -> str:
    """The SHA1 of a script's source, as EVALSHA names it."""
    sha = _SHAS.get(source)
    if sha is None:
        sha = _SHAS[source] = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
    return sha


async def eval_each(client: aioredis.Redis, source: str, calls: Sequence[tuple[Any, ...]],
                    *, cluster: bool) -> list[Any]:
    """Run the script ``source`` once per call, each ``(numkeys, *keys, *args)``, in order
    on one Redis (one pipeline); on a cluster (``cluster``), the calls on one key in order and
    those on other keys concurrently.

    Returns:
        The replies, in the order of ``calls``.

    Raises:
        RedisError: a call failed (the first failure; the calls after it in a pipeline
            ran).
    """
    sha = sha_of(source)
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in (1, 2):
        got = await _evalsha_each(client, sha, [calls[i] for i in todo], cluster)
        missing = []
        for i, reply in zip(todo, got, strict=True):
            if isinstance(reply, NoScriptError) and attempt == 1:
                missing.append(i)
            elif isinstance(reply, BaseException):
                raise reply
            else:
                replies[i] = reply
        if not missing:
            return replies
        await client.script_load(source)  # on a cluster: on every master
        todo = missing
    raise AssertionError("unreachable: the second attempt returns or raises")


async def _evalsha_each(client: aioredis.Redis, sha: str, calls: list[tuple[Any, ...]],
                        cluster: bool) -> list[Any]:
    """EVALSHA of each call: its reply, or the error it met (no call is left unsent)."""
    if not calls:
        return []
    if cluster:  # calls on one key keep their order; other keys' go alongside, capped
        by_key: dict[Any, list[int]] = {}
        for i, call in enumerate(calls):
            by_key.setdefault(call[1] if call[0] else None, []).append(i)
        replies: list[Any] = [None] * len(calls)
        cap = _cap(client)
        groups = iter(by_key.values())

        async def runner() -> None:
            for indexes in groups:  # the runners share the iterator: each group runs once
                for i in indexes:
                    try:
                        async with cap:
                            replies[i] = await client.evalsha(sha, *calls[i])
                    except Exception as exc:
                        replies[i] = exc

        await asyncio.gather(*(runner() for _ in range(min(len(by_key), _AT_ONCE))))
        return replies
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.evalsha(sha, *call)
    return list(await pipe.execute(raise_on_error=False))


def _cap(client: aioredis.Redis) -> asyncio.Semaphore:
    """The semaphore that caps ``client``'s script calls in flight: a quarter of one node's
    pool (redis-py's default holds 100), at most :data:`_AT_ONCE`."""
    cap = _CAPS.get(client)
    if cap is None:
        kwargs = getattr(getattr(client, "nodes_manager", None), "connection_kwargs", {})
        pool = int(kwargs.get("max_connections") or 100)
        cap = _CAPS[client] = asyncio.Semaphore(max(1, min(_AT_ONCE, pool // 4)))
    return cap
