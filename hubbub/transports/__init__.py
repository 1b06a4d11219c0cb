"""Brokers. ``open_transport(url)`` picks the implementation from the URL's scheme."""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from hubbub.errors import ConfigurationError
from hubbub.transports.base import (
    Capabilities,
    DeadLetter,
    DeadLetterRequest,
    Delivery,
    Outgoing,
    QueueStats,
    Transport,
)

__all__ = [
    "Capabilities",
    "DeadLetter",
    "DeadLetterRequest",
    "Delivery",
    "Outgoing",
    "QueueStats",
    "Transport",
    "open_transport",
]

# scheme -> (module, class, extra that provides its driver)
SCHEMES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("hubbub.transports.memory", "MemoryTransport", None),
    "sqlite": ("hubbub.transports.sqlite", "SQLiteTransport", None),
    "redis": ("hubbub.transports.redis", "RedisTransport", "redis"),
    "rediss": ("hubbub.transports.redis", "RedisTransport", "redis"),
    "amqp": ("hubbub.transports.amqp", "AMQPTransport", "amqp"),
    "amqps": ("hubbub.transports.amqp", "AMQPTransport", "amqp"),
    "beanstalk": ("hubbub.transports.beanstalk", "BeanstalkTransport", "beanstalk"),
}


def load_plugin(schemes: dict[str, tuple[str, str, str | None]], url: str, kind: str) -> type[Any]:
    """The class registered for ``url``'s scheme in ``schemes``.

    Raises:
        ConfigurationError: unknown scheme, or its extra is not installed.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme not in schemes:
        known = ", ".join(f"{s}://" for s in sorted(schemes))
        raise ConfigurationError(f"unknown {kind} URL scheme {scheme!r}; use one of: {known}")
    module_name, class_name, extra = schemes[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None or module_name in str(exc):
            raise
        raise ConfigurationError(
            f"{kind} {scheme!r} needs an extra: pip install hubbub[{extra}]"
        ) from exc
    cls: type[Any] = getattr(module, class_name)
    return cls


def open_transport(url: str, **options: Any) -> Transport:
    """A transport for ``url`` (not yet connected).

    Raises:
        ConfigurationError: unknown scheme, missing extra or malformed URL.
    """
    cls = load_plugin(SCHEMES, url, "transport")
    transport: Transport = cls(url, **options)
    return transport
