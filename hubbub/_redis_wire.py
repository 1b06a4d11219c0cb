"""Commands the Redis transport and result store pack themselves and send on a pooled
connection, for their hot paths: the producer's XADD, the worker's blocked fetch, and the
result store's batched script calls.

redis-py packs every argument in Python on its asyncio client and runs a pipeline through
several layers; for a script call with 16 keys that is more CPU than the round trip. Here
the parts that never change (a script's SHA and keys, a stream's name) are packed once and
the rest per call, and the replies are read as they come, with no reply callbacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError


def bulk(*args: bytes | str | int | float) -> bytes:
    """RESP bulk strings of ``args`` (a command's arguments, without the count in front).
    Floats are written with ``repr`` (exact), as the scripts expect."""
    out = []
    for arg in args:
        raw = (arg if isinstance(arg, bytes) else
               repr(arg).encode() if isinstance(arg, float) else str(arg).encode())
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def command(count: int, packed: bytes) -> bytes:
    """A whole command: ``count`` arguments whose bulk strings are ``packed``."""
    return b"*%d\r\n%s" % (count, packed)


def pack_xadd_head(stream: str) -> bytes:
    """RESP for ``XADD <stream> * id``, the head of every XADD of one message to
    ``stream``; ``<id> body <body>`` follow (7 arguments in all)."""
    return b"*7\r\n" + bulk("XADD", stream, "*", "id")


async def evalsha(client: aioredis.Redis, head: tuple[int, bytes], args: Sequence[Any]) -> Any:
    """One script call: ``head`` (its argument count, and ``EVALSHA sha numkeys keys...``
    and any fixed arguments packed) then ``args``, on one connection of ``client``'s pool.

    Returns:
        The script's reply, or the NoScriptError met (the caller loads the script).

    Raises:
        RedisError: any other error reply, or the connection failed; OSError likewise.
    """
    count, packed = head
    [reply] = await exchange(client, command(count + len(args), packed + bulk(*args)), 1)
    if isinstance(reply, BaseException) and not isinstance(reply, NoScriptError):
        raise reply
    return reply


async def exchange(client: aioredis.Redis, packed: bytes, replies: int) -> list[Any]:
    """Send ``packed`` (``replies`` commands) on one connection of ``client``'s pool and read
    every reply. An error reply comes back as its exception, in its place; a connection
    error is retried as redis-py retries its own calls (the commands are sent again).

    Raises:
        RedisError: the connection failed past the retries; OSError likewise.
    """
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]

    async def once() -> list[Any]:
        await conn.send_packed_command(packed, check_health=False)
        out: list[Any] = []
        for _ in range(replies):
            try:
                out.append(await conn.read_response())
            except ResponseError as exc:  # the reply was read: the connection is in step
                out.append(exc)
        return out

    async def failed(_error: Exception) -> None:
        await conn.disconnect()

    try:
        got: list[Any] = await conn.retry.call_with_retry(once, failed)
        return got
    except BaseException:
        await conn.disconnect()  # replies may be unread (a cancel): never reuse it
        raise
    finally:
        await pool.release(conn)
