"""Checks of the limit options a task takes (``unique``, ``unique_for``, ``rate_limit``,
``rate_limit_key``, ``concurrency``, ``concurrency_key``), each failing with one line that
says the fix."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hubbub.errors import ConfigurationError
from hubbub.limits.keys import check_key_from
from hubbub.limits.rate import parse_rate
from hubbub.settings import seconds

DEFAULT_UNIQUE_FOR = 3600.0  # seconds a unique key is kept when no unique_for is given


def check_unique_for(value: float | timedelta | None) -> float | None:
    """``unique_for`` in seconds (None stays None).

    Raises:
        ConfigurationError: not a positive number of seconds.
    """
    if value is None:
        return None
    ttl = seconds(value, "unique_for")
    if ttl <= 0:
        raise ConfigurationError(f"unique_for must be more than 0 seconds, got {ttl:g}; it is "
                                 "how long a unique key is kept at most, e.g. unique_for=60")
    return ttl


def check_limit_options(*, unique: Any, unique_for: Any, rate_limit: Any, concurrency: Any,
                        concurrency_key: Any, rate_limit_key: Any = None) -> dict[str, Any]:
    """The limit options of a task, checked and normalised (field name -> value).

    Raises:
        ConfigurationError: a bad value, with what to write instead.
    """
    if rate_limit is not None:
        parse_rate(rate_limit)
    if concurrency is not None and (isinstance(concurrency, bool)
                                    or not isinstance(concurrency, int) or concurrency < 1):
        raise ConfigurationError(f"concurrency must be a whole number of at least 1 (tasks "
                                 f"running at once across the fleet), not {concurrency!r}")
    if concurrency_key is not None and concurrency is None:
        raise ConfigurationError("concurrency_key needs concurrency=N too: at most N running "
                                 "at once per key")
    if rate_limit_key is not None and rate_limit is None:
        raise ConfigurationError("rate_limit_key needs rate_limit=\"N/period\" too: N starts "
                                 "per period for each key")
    if unique_for is not None and unique is None:
        raise ConfigurationError("unique_for needs unique=... too (or pass unique_key= and "
                                 "unique_for= to apply_async)")
    return {
        "unique": None if unique is None else check_key_from(unique, "unique"),
        "unique_for": check_unique_for(unique_for),
        "concurrency_key": (None if concurrency_key is None
                            else check_key_from(concurrency_key, "concurrency_key")),
        "rate_limit_key": (None if rate_limit_key is None
                           else check_key_from(rate_limit_key, "rate_limit_key")),
    }
