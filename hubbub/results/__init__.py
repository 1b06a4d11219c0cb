"""Result stores. ``open_results(url)`` picks the implementation from the URL's scheme."""

from __future__ import annotations

from typing import Any

from hubbub._plugins import create
from hubbub.results.base import (
    READY_STATES,
    ErrorInfo,
    ResultBackend,
    ResultRecord,
    State,
)

__all__ = [
    "READY_STATES",
    "ErrorInfo",
    "ResultBackend",
    "ResultRecord",
    "State",
    "open_results",
]

SCHEMES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("hubbub.results.memory", "MemoryResults", None),
    "sqlite": ("hubbub.results.sqlite", "SQLiteResults", None),
    "redis": ("hubbub.results.redis", "RedisResults", "redis"),
    "rediss": ("hubbub.results.redis", "RedisResults", "redis"),
    "redis+cluster": ("hubbub.results.redis", "RedisResults", "redis"),
    "rediss+cluster": ("hubbub.results.redis", "RedisResults", "redis"),
    "redis+sentinel": ("hubbub.results.redis", "RedisResults", "redis"),
    "rediss+sentinel": ("hubbub.results.redis", "RedisResults", "redis"),
}


def open_results(url: str, **options: Any) -> ResultBackend:
    """A result backend for ``url`` (not yet connected).

    Raises:
        ConfigurationError: unknown scheme, missing extra or malformed URL (secrets masked).
    """
    backend: ResultBackend = create(SCHEMES, url, "result backend", **options)
    return backend
