"""A Celery message on a hubbub queue, with no bridge: dead-lettered naming its task and id,
never as "not a JSON object" with task '?'."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis

from hubbub import Hub
from hubbub.transports.base import Outgoing
from hubbub.worker.loop import WorkerLoop
from hubbub.worker.pools import make_pool
from tests import brokers
from tests.compat.conftest import AMQP, REDIS, Names, celery_app, require_server


async def _drain(hub: Hub) -> None:
    worker = WorkerLoop(hub, pool=make_pool("threads", 1), stop_when_idle=True, lease=5)
    await asyncio.wait_for(worker.run(), 30)


async def _dead_reasons(hub: Hub) -> list[str]:
    transport = hub.open_transport()
    async with transport:
        return [d.reason for d in await transport.list_dead()]


def _celery_redis_payload(names: Names) -> tuple[bytes, str]:
    """What Celery pushes on its Redis list for send_task("shop.add", (2, 3)), and its id."""
    with celery_app(REDIS, names.queue) as celery:
        sent = celery.send_task("shop.add", (2, 3))
    client = redis.Redis.from_url(REDIS)
    try:
        payload = client.rpop(names.queue)
    finally:
        client.close()
    assert isinstance(payload, bytes)
    return payload, sent.id


async def test_a_celery_message_on_a_hubbub_redis_queue_is_dead_lettered_by_name(
        names: Names, tmp_path: Path) -> None:
    require_server("redis")
    payload, task_id = _celery_redis_payload(names)
    url = f"redis://127.0.0.1:6379/0?prefix={names.queue}"
    hub = Hub(url, results=f"sqlite:///{tmp_path / 'results.db'}")
    try:
        async with hub.open_transport() as transport:
            await transport.publish([Outgoing("default", payload, task_id)])
        await _drain(hub)
        [reason] = await _dead_reasons(hub)
    finally:
        hub.close()
        await brokers.load("redis").cleanup(url)
    assert "Celery message" in reason
    assert "'shop.add'" in reason
    assert task_id in reason
    assert "bridge is off" in reason
    assert "not a JSON object" not in reason


async def test_a_celery_message_on_a_hubbub_rabbitmq_queue_is_dead_lettered_by_name(
        names: Names, tmp_path: Path) -> None:
    require_server("amqp")
    from kombu import Exchange, Queue

    from hubbub.transports._amqp_topology import queue_names

    prefix = "hbc" + uuid.uuid4().hex[:10]
    url = f"{AMQP}?prefix={prefix}"
    hub = Hub(url, results=f"sqlite:///{tmp_path / 'results.db'}")
    try:
        async with hub.open_transport() as transport:
            # Publishing declares hubbub's queue; the purge empties it again.
            await transport.publish([Outgoing("default", b"{}", "declare")])
            await transport.purge("default")
        [target, *_] = queue_names(prefix, "default")
        with celery_app(AMQP, names.queue) as celery:
            # Straight onto hubbub's queue, as a misrouted Celery producer would.
            sent = celery.send_task("shop.add", (2, 3), queue=Queue(
                target, exchange=Exchange(""), routing_key=target, no_declare=True))
        await _drain(hub)
        [reason] = await _dead_reasons(hub)
    finally:
        hub.close()
        await brokers.load("amqp").cleanup(url)
    assert f"task 'shop.add', id {sent.id}" in reason
    assert "bridge is off" in reason


@pytest.mark.parametrize("body", [b"[1, 2, 3]", b'{"headers": {"task": 1}, "body": ""}'])
def test_what_only_looks_like_celery_is_not_named_as_celery(body: bytes) -> None:
    from hubbub.compat.celery.protocol import recognise

    assert recognise(body, None) is None
    assert recognise(body, {"task": "shop.add"}) is None  # no id: not a v2 message
