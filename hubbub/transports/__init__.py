"""Brokers. ``open_transport(url)`` picks the implementation from the URL's scheme."""

from __future__ import annotations

from typing import Any

# load_plugin lives in hubbub._plugins; re-exported for the modules that import it from here.
from hubbub._plugins import create
from hubbub._plugins import load_plugin as load_plugin
from hubbub.transports.base import (
    Capabilities,
    DeadLetter,
    DeadLetterRequest,
    Delivery,
    Outgoing,
    QueueStats,
    SyncPublisher,
    Transport,
)

__all__ = [
    "Capabilities",
    "DeadLetter",
    "DeadLetterRequest",
    "Delivery",
    "Outgoing",
    "QueueStats",
    "SyncPublisher",
    "Transport",
    "open_transport",
]

# scheme -> (module, class, extra that provides its driver)
SCHEMES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("hubbub.transports.memory", "MemoryTransport", None),
    "sqlite": ("hubbub.transports.sqlite", "SQLiteTransport", None),
    "redis": ("hubbub.transports.redis", "RedisTransport", "redis"),
    "rediss": ("hubbub.transports.redis", "RedisTransport", "redis"),
    "redis+cluster": ("hubbub.transports.redis", "RedisTransport", "redis"),
    "rediss+cluster": ("hubbub.transports.redis", "RedisTransport", "redis"),
    "redis+sentinel": ("hubbub.transports.redis", "RedisTransport", "redis"),
    "rediss+sentinel": ("hubbub.transports.redis", "RedisTransport", "redis"),
    "amqp": ("hubbub.transports.amqp", "AMQPTransport", "amqp"),
    "amqps": ("hubbub.transports.amqp", "AMQPTransport", "amqp"),
    # None: the transport speaks beanstalkd's protocol itself. The empty hubbub[beanstalk]
    # extra stays in pyproject.toml only so that existing install lines keep working.
    "beanstalk": ("hubbub.transports.beanstalk", "BeanstalkTransport", None),
}


def open_transport(url: str, **options: Any) -> Transport:
    """A transport for ``url`` (not yet connected).

    Raises:
        ConfigurationError: unknown scheme, missing extra or malformed URL (secrets masked).
    """
    transport: Transport = create(SCHEMES, url, "transport", **options)
    return transport
