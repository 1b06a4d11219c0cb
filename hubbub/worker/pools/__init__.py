"""Worker pools by name: ``make_pool("prefork", 4, max_tasks_per_child=100)``.

``POOLS`` is the one list of pools; what the CLI says about them (``--pool``'s choices and
help, which pools ``--autoscale`` applies to) is read from the pool classes it names. Loading
a pool's class never imports an optional extra (gevent is imported only in its children).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from hubbub.errors import ConfigurationError
from hubbub.worker.pools.base import Pool

# name -> (module, class, default concurrency or None for the pool's own default)
POOLS: dict[str, tuple[str, str, int | None]] = {
    "solo": ("hubbub.worker.pools.threads", "SoloPool", 1),
    "threads": ("hubbub.worker.pools.threads", "ThreadPool", 8),
    "async": ("hubbub.worker.pools.coroutines", "AsyncPool", 100),
    "prefork": ("hubbub.worker.pools.prefork", "PreforkPool", None),  # the CPU count
    "hybrid": ("hubbub.worker.pools.hybrid", "HybridPool", None),  # CPU count x coroutines
    "gevent": ("hubbub.worker.pools.gevent", "GeventPool", 100),  # greenlets in one child
}


def pool_class(kind: str) -> type[Pool]:
    """The class of the ``kind`` pool, e.g. ``PreforkPool`` for "prefork".

    Raises:
        ConfigurationError: unknown kind.
    """
    if kind not in POOLS:
        raise ConfigurationError(f"unknown pool {kind!r}; choose one of: {', '.join(POOLS)}")
    module, name, _ = POOLS[kind]
    cls: type[Pool] = getattr(importlib.import_module(module), name)
    return cls


def describe_pools() -> dict[str, str]:
    """Every pool's one-line ``summary``, by kind, in ``POOLS`` order."""
    return {kind: pool_class(kind).summary for kind in POOLS}


def resizable_pools() -> list[str]:
    """The kinds of pool that can resize, and so autoscale."""
    return [kind for kind in POOLS if pool_class(kind).resizable]


def cannot_autoscale(kind: str) -> str:
    """Why autoscale was refused for the ``kind`` pool, naming those that can, in one line."""
    return (f"autoscale needs a pool that can resize ({', '.join(resizable_pools())}); "
            f"the {kind} pool cannot")


def accepts(kind: str, option: str) -> bool:
    """Whether the ``kind`` pool takes the keyword ``option`` (e.g. ``coroutines``).

    Raises:
        ConfigurationError: unknown kind.
    """
    return option in inspect.signature(pool_class(kind)).parameters


def make_pool(kind: str, concurrency: int | None = None, **options: Any) -> Pool:
    """A pool of ``kind`` with ``concurrency`` (the pool's default when None).

    Args:
        kind: a name from ``POOLS``.
        concurrency: what ``-c`` means for that pool (processes for prefork and hybrid).
        options: keyword options of that pool's class, e.g. ``max_tasks_per_child``;
            options that are None are left at the pool's default.

    Raises:
        ConfigurationError: unknown kind, an option the pool does not take, a bad value,
            or a missing extra (gevent).
    """
    cls = pool_class(kind)
    default = POOLS[kind][2]
    given = {key: value for key, value in options.items() if value is not None}
    for key in given:
        if not accepts(kind, key):
            users = [k for k in POOLS if accepts(k, key)]
            flag = "--" + key.replace("_", "-")
            raise ConfigurationError(f"{flag} does not apply to the {kind} pool; it applies to: "
                                     f"{', '.join(users) or 'none'}")
    try:
        size = concurrency if concurrency is not None else default
        # A pool whose default is None (process pools) picks its own: the CPU count.
        pool: Pool = cls(size, **given) if size is not None else cls(**given)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    return pool
