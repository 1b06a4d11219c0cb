"""A Redis master, its replica and three sentinels on loopback, started by the test session
(tests/cluster/servers.py); each test gets its own key prefix."""

from __future__ import annotations

from pathlib import Path

from tests.brokers._redis_keys import delete_prefix
from tests.cluster import servers

SCHEME = "redis+sentinel"
SLOW = True  # runs with -m slow: it starts five servers


def start() -> None:
    servers.redis_sentinel()


def server() -> tuple[str, int]:
    return servers.HOST, servers.SENTINEL_PORT + 2  # the first sentinel


def make_url(tmp_path: Path, run_id: str) -> str:
    return servers.redis_sentinel().url(run_id)


def results_url(tmp_path: Path, run_id: str) -> str:
    hosts = ",".join(f"{servers.HOST}:{servers.SENTINEL_PORT + 2 + i}" for i in range(3))
    return f"redis+sentinel://{hosts}/{servers.RedisSentinel.SERVICE}?prefix={run_id}"


async def cleanup(url: str) -> None:
    await delete_prefix(url)
