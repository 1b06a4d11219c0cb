"""``celery_lane``: a worker lane that runs Celery's queues (``hubbub worker --celery-queue``).

The bridge is the operator's explicit choice: it runs unsigned messages written by Celery
producers, so it refuses to start for a hub that requires signed messages.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from hubbub._redact import redact
from hubbub.errors import ConfigurationError
from hubbub.middleware import Middleware
from hubbub.worker.lane import Lane, parse_lane
from hubbub.worker.pools import make_pool

from .canvas import CeleryChainMiddleware
from .producer import broker_url

if TYPE_CHECKING:
    from hubbub.hub import Hub

    from ._common import CelerySource
    from .results import CeleryResultWriter

DEFAULT_EXPIRES = 86400.0  # Celery's result_expires default: one day
_REDIS = ("redis", "rediss")


def open_source(hub: Hub, broker: str, queues: tuple[str, ...],
                results: CeleryResultWriter | None) -> CelerySource:
    """The source for ``queues`` on Celery's ``broker``.

    Raises:
        ConfigurationError: the broker's driver is not installed.
    """
    if urlsplit(broker).scheme in _REDIS:
        source = _load("redis_source", "redis")
        return cast("CelerySource", source.RedisCelerySource(hub, broker, queues, results))
    source = _load("amqp_source", "amqp")
    return cast("CelerySource", source.AmqpCelerySource(hub, broker, queues, results))


def _load(module: str, extra: str) -> Any:
    """A bridge module whose driver is an optional extra (loaded as transports are)."""
    try:
        return importlib.import_module(f"hubbub.compat.celery.{module}")
    except ImportError as exc:
        raise ConfigurationError(f"the Celery bridge on {extra} needs an extra: "
                                 f"pip install hubbub[{extra}] ({exc})") from None


def celery_lane(hub: Hub, spec: str, *, broker: str | None = None, results: str | None = None,
                result_expires: float = DEFAULT_EXPIRES, pool: str = "prefork",
                concurrency: int | None = None, prefetch: int | None = None,
                **pool_options: Any) -> Lane:
    """A lane running Celery's queues: ``celery`` or ``a,b`` on the worker's pool, or
    ``QUEUES=POOL[:N]`` on a pool of its own (as ``--queue``).

    Args:
        hub: the app whose tasks run (Celery's task names must be registered on it).
        spec: the queues, and optionally their pool.
        broker: Celery's broker URL (see :func:`~hubbub.compat.celery.producer.broker_url`).
        results: Celery's Redis result backend, where results are also written (default
            the hub's ``celery_results`` setting; None writes none).
        result_expires: seconds Celery's results are kept (its ``result_expires``).
        pool, concurrency, prefetch: the worker's pool, when ``spec`` names none.
        pool_options: options for pools that take them (``coroutines``, ...).

    Raises:
        ConfigurationError: the hub requires signed messages, a broker or result backend
            that the bridge cannot use, or a malformed spec.
    """
    if hub.signer is not None:
        raise ConfigurationError(
            "the Celery bridge runs unsigned Celery messages, and this hub requires signed "
            "ones (signing_keys): run the bridge with a hub without signing keys")
    url = broker_url(hub.settings, broker)
    if "=" in spec:
        lane = parse_lane(spec, **pool_options)
    else:
        names = [q.strip() for q in spec.split(",") if q.strip()]
        if not names:
            raise ConfigurationError(f"--celery-queue {spec!r} names no queue")
        usable = {k: v for k, v in pool_options.items() if v is not None}
        lane = Lane(names, make_pool(pool, concurrency, **usable), prefetch)
    target = results or hub.settings.celery_results
    writer: CeleryResultWriter | None = None
    middleware: list[Middleware] = []
    if target:
        if urlsplit(target).scheme not in _REDIS:
            raise ConfigurationError(f"Celery results are written to a Redis result backend "
                                     f"only, not {redact(target)}")
        results_module = _load("results", "redis")
        writer = results_module.CeleryResultWriter(target, expires=result_expires)
        middleware.append(results_module.CeleryResultsMiddleware(hub, writer))
    lane.source = source = open_source(hub, url, tuple(lane.queues), writer)
    # Outermost first: the next step of a chain is sent after the step's Celery result is
    # written, both before the step is acked.
    lane.middleware = [CeleryChainMiddleware(source), *middleware]
    return lane
