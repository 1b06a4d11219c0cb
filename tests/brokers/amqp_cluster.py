"""A 3-node RabbitMQ cluster on loopback with quorum queues, started by the test session
(tests/cluster/rabbit.py); each test gets its own prefix. Not in ``NAMES``: the conformance
suite expects priorities, which quorum queues on RabbitMQ 3.x do not have (docs/scaling.md).
"""

from __future__ import annotations

from pathlib import Path

from tests.brokers import amqp
from tests.cluster import rabbit

SCHEME = "amqp"
SLOW = True  # runs with -m slow: it starts three RabbitMQ nodes


def start() -> None:
    rabbit.rabbit_cluster()


def server() -> tuple[str, int]:
    return rabbit.HOST, rabbit.AMQP_PORT


def make_url(tmp_path: Path, run_id: str) -> str:
    return rabbit.rabbit_cluster().url(run_id, queue_type="quorum")


def results_url(tmp_path: Path, run_id: str) -> None:
    return None  # RabbitMQ keeps no results


async def cleanup(url: str) -> None:
    await amqp.cleanup(url)
