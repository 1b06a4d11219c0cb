"""Worker pools by name: ``make_pool("threads", 8)``."""

from __future__ import annotations

import importlib

from hubbub.errors import ConfigurationError
from hubbub.worker.pools.base import Pool

# name -> (module, class, default concurrency or None for the CPU count)
POOLS: dict[str, tuple[str, str, int | None]] = {
    "solo": ("hubbub.worker.pools.threads", "SoloPool", 1),
    "threads": ("hubbub.worker.pools.threads", "ThreadPool", 8),
    "async": ("hubbub.worker.pools.coroutines", "AsyncPool", 100),
}


def make_pool(kind: str, concurrency: int | None = None) -> Pool:
    """A pool of ``kind`` with ``concurrency`` slots (the pool's default when None).

    Raises:
        ConfigurationError: unknown kind or bad concurrency.
    """
    if kind not in POOLS:
        raise ConfigurationError(f"unknown pool {kind!r}; choose one of: {', '.join(POOLS)}")
    module, name, default = POOLS[kind]
    cls = getattr(importlib.import_module(module), name)
    try:
        pool: Pool = cls(concurrency if concurrency is not None else default)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    return pool
