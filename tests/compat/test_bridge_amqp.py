"""The bridge on RabbitMQ: Celery producers, hubbub workers, Celery callers reading results
(in Celery's Redis result backend)."""

from __future__ import annotations

import asyncio
import time
from types import ModuleType
from typing import Any

import aio_pika
import pytest

from tests.compat.conftest import AMQP, Names, bridge_worker, celery_app, require_server
from tests.worker.scratch import wait_until


@pytest.fixture(autouse=True)
def _servers() -> None:
    require_server("amqp")
    require_server("redis")


def _dead(queue: str) -> list[Any]:
    """The bridge's dead letters of ``queue``: (headers, body), read without taking them."""

    async def read() -> list[Any]:
        async with await aio_pika.connect(AMQP) as conn:
            channel = await conn.channel()
            dead = await channel.declare_queue(f"{queue}.hubbub.dead", durable=True)
            found = []
            while (m := await dead.get(no_ack=False, fail=False)) is not None:
                found.append((dict(m.headers or {}), m.body))
            return found  # unacked: back in the queue when the channel closes

    return asyncio.run(read())


def test_celery_send_task_on_rabbitmq_runs_on_the_bridge(app: ModuleType,
                                                         names: Names) -> None:
    with celery_app(AMQP, names.queue) as celery:
        sent = celery.send_task("shop.add", (2, 3))
        names.ids.append(sent.id)
        with bridge_worker(app, names.queue, AMQP):
            assert sent.get(timeout=10) == 5


def test_countdown_on_rabbitmq_waits_in_a_delay_queue(app: ModuleType, names: Names) -> None:
    with celery_app(AMQP, names.queue) as celery:
        sent = celery.send_task("shop.add", (4, 4), countdown=2)
        names.ids.append(sent.id)
        began = time.time()
        with bridge_worker(app, names.queue, AMQP):
            assert sent.get(timeout=15) == 8
        assert time.time() - began >= 1.9


def test_a_chain_on_rabbitmq_runs_step_after_step(app: ModuleType, names: Names) -> None:
    from celery import chain

    with celery_app(AMQP, names.queue) as celery:
        result = chain(celery.signature("shop.add", (1, 2)),
                       celery.signature("shop.add", (10,))).apply_async()
        names.ids += [result.id, result.parent.id]
        with bridge_worker(app, names.queue, AMQP):
            assert result.get(timeout=15) == 13


def test_a_chord_on_rabbitmq_is_dead_lettered_with_the_reason(app: ModuleType,
                                                              names: Names) -> None:
    with celery_app(AMQP, names.queue) as celery:
        sent = celery.signature("shop.add", (1, 2)).apply_async(
            link_error=celery.signature("shop.add", (10,)))
        names.ids.append(sent.id)
        with bridge_worker(app, names.queue, AMQP):
            wait_until(lambda: len(_dead(names.queue)) == 1, "the message dead-lettered")
        [(headers, _)] = _dead(names.queue)
        assert headers["id"] == sent.id
        assert "canvas (errbacks)" in str(headers["x-hubbub-reason"])
