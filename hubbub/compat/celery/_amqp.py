"""Celery's layout on RabbitMQ, for the bridge and the producer.

Celery declares each queue durable, bound to a direct exchange of the same name with the
queue's name as routing key, and publishes task messages there (JSON body, the task in AMQP
headers). The bridge declares them the same way when they are missing, and never redeclares
a queue Celery made (it may carry arguments such as ``x-max-priority``): it looks first.

An eta is held by RabbitMQ, not in memory: the message waits in a per-delay queue
``hubbub.celery.delay.<queue>.<seconds>`` whose TTL dead-letters it back into the queue
(seconds rounded up, so never early; the delay queue removes itself when unused).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, ChannelNotFoundEntity

from hubbub._redact import redact
from hubbub.errors import HubbubError, TransportError, TransportUnavailable

from .protocol import JSON_TYPE, Built

_UNAVAILABLE = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, TimeoutError)


@contextlib.contextmanager
def guard(url: str) -> Iterator[None]:
    """RabbitMQ's driver errors as hubbub's, with the URL's password masked."""
    try:
        yield
    except HubbubError:
        raise
    except _UNAVAILABLE as exc:
        raise TransportUnavailable(redact(f"rabbitmq at {url} failed: {exc!r}")) from exc
    except Exception as exc:
        raise TransportError(redact(f"rabbitmq at {url} failed: {exc!r}")) from exc


async def connect(url: str) -> tuple[AbstractConnection, AbstractChannel]:
    """A connection and a channel with publisher confirms.

    Raises:
        TransportUnavailable: RabbitMQ cannot be reached.
    """
    with guard(url):
        connection = await aio_pika.connect(url, timeout=10)
        return connection, await connection.channel(publisher_confirms=True)


async def ensure_queue(connection: AbstractConnection, channel: AbstractChannel,
                       queue: str) -> None:
    """Declare ``queue`` as Celery does, unless it exists (then it is left as it is)."""
    probe = await connection.channel()
    try:
        await probe.declare_queue(queue, passive=True)
    except ChannelNotFoundEntity:
        exchange = await channel.declare_exchange(queue, aio_pika.ExchangeType.DIRECT,
                                                  durable=True)
        declared = await channel.declare_queue(queue, durable=True)
        await declared.bind(exchange, routing_key=queue)
    finally:
        with contextlib.suppress(Exception):
            await probe.close()


def message_of(built: Built) -> aio_pika.Message:
    """An AMQP message carrying ``built`` as Celery sends it."""
    props = built.properties
    return aio_pika.Message(
        built.body, headers=built.headers, content_type=JSON_TYPE, content_encoding="utf-8",
        correlation_id=props.get("correlation_id"), reply_to=props.get("reply_to") or None,
        priority=min(max(int(props.get("priority") or 0), 0), 255),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


def copy_of(m: AbstractIncomingMessage, extra: Mapping[str, Any] | None = None
            ) -> aio_pika.Message:
    """A persistent copy of a received message, with ``extra`` headers."""
    headers = dict(m.headers or {})
    headers.update(extra or {})
    return aio_pika.Message(
        m.body, headers=headers, content_type=m.content_type,
        content_encoding=m.content_encoding, correlation_id=m.correlation_id,
        reply_to=m.reply_to, priority=m.priority, message_id=m.message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


async def send_later(channel: AbstractChannel, queue: str, message: aio_pika.Message,
                     delay: float) -> None:
    """Publish ``message`` so that it reaches ``queue`` after ``delay`` seconds (rounded up)."""
    seconds = max(1, math.ceil(delay))
    name = f"hubbub.celery.delay.{queue}.{seconds}"
    await channel.declare_queue(name, durable=True, arguments={
        "x-message-ttl": seconds * 1000, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue, "x-expires": seconds * 1000 + 60_000})
    await channel.default_exchange.publish(message, routing_key=name)


def dead_queue(queue: str) -> str:
    """Where the bridge keeps the dead letters of Celery queue ``queue``."""
    return f"{queue}.hubbub.dead"
