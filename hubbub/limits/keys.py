"""Keys derived from a task's arguments: for unique jobs and per-key concurrency.

A task option names how: a tuple of parameter names (``unique=("order_id",)``), whose values
make the key, or a function called with the task's own arguments that returns it
(``unique=lambda order_id, **_: f"order:{order_id}"``).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

from hubbub.errors import ConfigurationError

KeyFrom = Callable[..., str] | tuple[str, ...]
"""How a key is derived: parameter names, or a function of the task's arguments."""


def check_key_from(value: object, option: str) -> KeyFrom:
    """``value`` as a :data:`KeyFrom`, a lone name taken as a one-name tuple.

    Raises:
        ConfigurationError: neither a callable nor parameter names.
    """
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, str) and v.isidentifier() for v in value):
            return tuple(value)
    elif callable(value):
        return value
    raise ConfigurationError(
        f"{option} takes parameter names, e.g. {option}=(\"order_id\",), or a function of "
        f"the task's arguments returning a str, not {value!r}")


def derive_key(key_from: KeyFrom, fn: Callable[..., Any], args: tuple[Any, ...],
               kwargs: Mapping[str, Any], option: str) -> str:
    """The key ``key_from`` gives for a call of ``fn`` with these arguments.

    Raises:
        ConfigurationError: a named parameter is not one of ``fn``'s, or the function did not
            return a str.
        TypeError: the arguments do not fit ``fn`` (or the key function).
    """
    if callable(key_from):
        key = key_from(*args, **kwargs)
        if not isinstance(key, str):
            raise ConfigurationError(f"{option} must return a str, got {key!r}")
        return key
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot derive the {option} key: {exc}") from None
    bound.apply_defaults()
    missing = [name for name in key_from if name not in bound.arguments]
    if missing:
        raise ConfigurationError(f"{option} names {missing[0]!r}, which is not a parameter of "
                                 f"the task; name one of {list(bound.arguments)}")
    return ":".join(json.dumps(bound.arguments[name], sort_keys=True, default=repr)
                    for name in key_from)
