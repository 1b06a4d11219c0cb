"""Producing for Celery workers: ``hub.send_task(name, args, protocol="celery", queue=...)``.

The message is Celery protocol v2 as Celery itself sends it: on Redis, kombu's JSON envelope
``LPUSH``-ed on the queue's list; on RabbitMQ, the JSON body with the task in the AMQP
headers, published (confirmed) straight into the queue, which is declared as Celery declares it when
missing. A Celery worker honours the eta
and expires headers itself. Drivers are loaded on first use, as transports are.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hubbub._redact import redact
from hubbub.errors import ConfigurationError
from hubbub.message import Envelope

from .protocol import build, priority_key, redis_payload

if TYPE_CHECKING:
    from hubbub.settings import Settings

DEFAULT_QUEUE = "celery"  # Celery's task_default_queue
_REDIS = ("redis", "rediss")
_AMQP = ("amqp", "amqps", "pyamqp")


def broker_url(settings: Settings, broker: str | None = None) -> str:
    """Celery's broker URL: ``broker``, else the ``celery_broker`` setting, else the hub's
    own broker when it is Redis or RabbitMQ.

    Raises:
        ConfigurationError: none of them names a Redis or RabbitMQ broker.
    """
    url = broker or settings.celery_broker or settings.broker
    scheme = urlsplit(url).scheme
    if scheme not in _REDIS + _AMQP:
        raise ConfigurationError(
            f"Celery's broker must be redis:// or amqp://, not {redact(url)}: pass "
            "--celery-broker URL (or set HUBBUB_CELERY_BROKER)")
    if scheme == "pyamqp":  # Celery's spelling of the same protocol
        url = "amqp" + url[len("pyamqp"):]
    return url


def _load(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(f"sending to Celery on {extra} needs an extra: "
                                 f"pip install hubbub[{extra}] ({exc})") from None


class CeleryProducer:
    """Sends Celery v2 messages to Celery's broker; one per process and event loop.

    Args:
        url: Celery's broker, ``redis://...`` or ``amqp://...``.
        origin: the ``origin`` header (who sent it), as Celery's node name.
    """

    def __init__(self, url: str, *, origin: str = "hubbub") -> None:
        self.url = url
        self.origin = origin
        self.redis = urlsplit(url).scheme in _REDIS
        self._client: Any = None  # redis.asyncio.Redis, or (connection, channel)
        self._declared: set[str] = set()

    async def send(self, env: Envelope) -> None:
        """Publish ``env`` as a Celery message on Celery's queue ``env.queue``.

        Raises:
            MessageError: an argument cannot be sent as JSON.
            TransportUnavailable: the broker cannot be reached.
        """
        built = build(env, origin=self.origin)
        if self.redis:
            await self._send_redis(built, env)
        else:
            await self._send_amqp(built, env)

    async def _send_redis(self, built: Any, env: Envelope) -> None:
        redis_url = _load("hubbub._redis", "redis")
        url = redis_url.RedisURL.parse(self.url)
        if self._client is None:
            self._client = url.client(name="hubbub-celery-producer")
        with redis_url.translate(url):
            await self._client.lpush(priority_key(env.queue, 0),
                                     redis_payload(built, env.queue))

    async def _send_amqp(self, built: Any, env: Envelope) -> None:
        amqp = _load("hubbub.compat.celery._amqp", "amqp")
        if self._client is None or self._client[1].is_closed:
            self._client = await amqp.connect(self.url)
            self._declared.clear()
        connection, channel = self._client
        with amqp.guard(self.url):
            if env.queue not in self._declared:
                await amqp.ensure_queue(connection, channel, env.queue)
                self._declared.add(env.queue)
            # Straight into the queue (the default exchange), whatever it is bound to.
            await channel.default_exchange.publish(amqp.message_of(built),
                                                   routing_key=env.queue)

    async def close(self) -> None:
        """Close the connection, if one is open."""
        client, self._client = self._client, None
        if client is None:
            return
        if self.redis:
            await client.aclose()
        else:
            await client[0].close()
