"""Lua scripts run many at a time, on one Redis or on a Redis Cluster.

A plain pipeline holds each script call and sends them in one round trip. A cluster client
refuses scripts in a pipeline (their keys may lie on different masters), so there each call
goes on its own, concurrently, to its keys' master: every call must name keys of one slot
(one hash tag). Either way, a call that found its script missing (Redis restarted and forgot
it) is sent again once the script is loaded, and only that call: the others already ran.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

_SHAS: dict[str, str] = {}  # script source -> its SHA1, for EVALSHA


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
    if cluster:  # calls on one key keep their order; other keys' go alongside
        by_key: dict[Any, list[int]] = {}
        for i, call in enumerate(calls):
            by_key.setdefault(call[1] if call[0] else None, []).append(i)
        replies: list[Any] = [None] * len(calls)

        async def in_order(indexes: list[int]) -> None:
            for i in indexes:
                try:
                    replies[i] = await client.evalsha(sha, *calls[i])
                except Exception as exc:
                    replies[i] = exc

        await asyncio.gather(*(in_order(indexes) for indexes in by_key.values()))
        return replies
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.evalsha(sha, *call)
    return list(await pipe.execute(raise_on_error=False))
