"""The shared Redis at 127.0.0.1:6379; each test gets its own key prefix in db 0."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SCHEME = "redis"
HOST, PORT = "127.0.0.1", 6379


def server() -> tuple[str, int]:
    return HOST, PORT


def make_url(tmp_path: Path, run_id: str) -> str:
    return f"redis://{HOST}:{PORT}/0?prefix={run_id}"


def results_url(tmp_path: Path, run_id: str) -> str:
    return f"redis://{HOST}:{PORT}/0?prefix={run_id}"


def _escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def cleanup(url: str) -> None:
    """Delete every key of the test's prefix: ``<prefix>:...`` and ``{<prefix>:<queue>}:...``."""
    import redis.asyncio as redis

    parts = urlsplit(url)
    prefix = parse_qs(parts.query)["prefix"][0]
    client = redis.Redis(host=parts.hostname or HOST, port=parts.port or PORT,
                         db=int(parts.path.strip("/") or 0))
    try:
        for pattern in (f"{_escape(prefix)}:*", f"{{{_escape(prefix)}:*"):
            keys = [key async for key in client.scan_iter(match=pattern, count=500)]
            for start in range(0, len(keys), 500):
                await client.unlink(*keys[start : start + 500])
    finally:
        await client.aclose()
