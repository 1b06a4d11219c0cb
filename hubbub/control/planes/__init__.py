"""The plane of each broker: ``open_plane(broker, results)`` picks it from the URL's scheme.

Redis keeps channels in capped streams (:mod:`.redis`), RabbitMQ in fanout exchanges
(:mod:`.amqp`), SQLite in a rotated table (:mod:`.sqlite`), ``memory://`` in process.
Beanstalkd has no broadcast: its plane lives in the hub's result store (Redis or SQLite).
"""

from __future__ import annotations

from hubbub._plugins import Registry, check_url, load_plugin
from hubbub._redact import redact
from hubbub.control.plane import MAXLEN, MemoryPlane, Plane
from hubbub.errors import ConfigurationError

__all__ = ["PLANES", "open_plane"]

# scheme -> (module, class, extra that provides its driver)
PLANES: Registry = {
    "sqlite": ("hubbub.control.planes.sqlite", "SQLitePlane", None),
    "redis": ("hubbub.control.planes.redis", "RedisPlane", "redis"),
    "rediss": ("hubbub.control.planes.redis", "RedisPlane", "redis"),
    "amqp": ("hubbub.control.planes.amqp", "AMQPPlane", "amqp"),
    "amqps": ("hubbub.control.planes.amqp", "AMQPPlane", "amqp"),
}
# Brokers that carry no broadcast of their own: their plane is in the result store.
_VIA_RESULTS = ("beanstalk",)


def open_plane(broker: str, results: str | None = None, *, maxlen: int = MAXLEN) -> Plane:
    """A new, unconnected plane for a hub on ``broker`` keeping results in ``results``.

    Args:
        broker: the broker URL.
        results: the result store URL (None: no store); used where the broker has no
            broadcast of its own (Beanstalkd).
        maxlen: messages a channel keeps for lagging readers.

    Raises:
        ConfigurationError: a malformed URL, a missing extra, a Beanstalkd broker without
            a Redis or SQLite result store, or a scheme that carries no plane.
    """
    scheme = check_url(broker, "broker").scheme.lower()
    url = broker
    if scheme in _VIA_RESULTS:
        store = None if results is None else check_url(results, "result store").scheme.lower()
        if results is None or store not in ("redis", "rediss", "sqlite", "memory"):
            raise ConfigurationError(
                f"events and remote control on {scheme}:// travel through the result store;"
                " configure one: results='redis://...' or results='sqlite:///hubbub.db'"
                f" (now {redact(results) if results else 'none'})")
        url, scheme = results, store
    if scheme == "memory":
        return MemoryPlane(url.split("?", 1)[0], maxlen)
    if scheme not in PLANES:
        raise ConfigurationError(
            f"events and remote control are not available on {scheme}:// brokers")
    plane: Plane = load_plugin(PLANES, url, "plane")(url, maxlen)
    return plane
