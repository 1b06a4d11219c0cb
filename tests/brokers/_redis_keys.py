"""Deleting one test's keys from any Redis topology (single, cluster, sentinel)."""

from __future__ import annotations

from hubbub._redis import RedisURL


def _escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def delete_prefix(url: str) -> None:
    """Delete every key of the URL's prefix: ``<prefix>:...``, ``{<prefix>:...}:...`` and
    ``{<prefix>}:...``, on every master (a cluster's SCAN visits each)."""
    config = RedisURL.parse(url)
    client = config.client(name="hubbub-test-cleanup")
    prefix = _escape(config.prefix)
    try:
        for pattern in (f"{prefix}:*", f"{{{prefix}:*", f"{{{prefix}}}*"):
            keys = [key async for key in client.scan_iter(match=pattern, count=500)]
            for start in range(0, len(keys), 500):
                pipe = client.pipeline(transaction=False)
                for key in keys[start : start + 500]:
                    pipe.execute_command("UNLINK", key)  # one by one: a cluster splits by slot
                await pipe.execute()
    finally:
        await client.aclose()
