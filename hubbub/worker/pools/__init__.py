"""Worker pools by name: ``make_pool("prefork", 4, max_tasks_per_child=100)``."""

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
    if kind not in POOLS:
        raise ConfigurationError(f"unknown pool {kind!r}; choose one of: {', '.join(POOLS)}")
    module, name, default = POOLS[kind]
    cls = getattr(importlib.import_module(module), name)
    given = {key: value for key, value in options.items() if value is not None}
    accepted = inspect.signature(cls).parameters
    for key in given:
        if key not in accepted:
            users = [k for k, (m, n, _) in POOLS.items()
                     if key in inspect.signature(getattr(importlib.import_module(m), n)).parameters]
            flag = "--" + key.replace("_", "-")
            raise ConfigurationError(f"{flag} does not apply to the {kind} pool; it applies to: "
                                     f"{', '.join(users) or 'none'}")
    try:
        pool: Pool = cls(concurrency if concurrency is not None else default, **given)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    return pool
