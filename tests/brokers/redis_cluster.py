"""A Redis Cluster of 3 masters and 3 replicas on loopback, started by the test session
(tests/cluster/servers.py); each test gets its own key prefix."""

from __future__ import annotations

from pathlib import Path

from tests.brokers._redis_keys import delete_prefix
from tests.cluster import servers

SCHEME = "redis+cluster"
SLOW = True  # runs with -m slow: it starts six servers


def start() -> None:
    servers.redis_cluster()


def server() -> tuple[str, int]:
    return servers.HOST, servers.CLUSTER_PORT


def make_url(tmp_path: Path, run_id: str) -> str:
    return servers.redis_cluster().url(run_id)


def results_url(tmp_path: Path, run_id: str) -> str:
    hosts = f"{servers.HOST}:{servers.CLUSTER_PORT}"  # no start: called while collecting
    return f"redis+cluster://{hosts}?prefix={run_id}"


async def cleanup(url: str) -> None:
    await delete_prefix(url)
