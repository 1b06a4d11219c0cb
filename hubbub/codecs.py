"""Codecs turn task arguments into bytes and back.

JSON is the default (orjson when installed, else the standard library). msgpack is optional.
pickle exists only for users who ask for it by name, because unpickling runs code chosen by
whoever can write to the broker.
"""

from __future__ import annotations

import json
import pickle  # noqa: S403 - opt-in only; see Codec.trusted_only
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hubbub.errors import ConfigurationError, MessageError

try:  # a fast JSON codec where installed (extra: hubbub[fast])
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None


@dataclass(frozen=True, slots=True)
class Codec:
    """A named pair of functions between Python values and bytes."""

    name: str
    content_type: str
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]
    trusted_only: bool = False  # decoding may run code: never accept by default


_ORJSON_OPTS = 0
if _orjson is not None:
    # Refuse what the stdlib fallback refuses, so a payload never depends on what is installed.
    _ORJSON_OPTS = _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def json_dumps(value: Any) -> bytes:
    """Encode strict JSON; raises TypeError/ValueError for anything JSON cannot hold."""
    if _orjson is not None:
        return _orjson.dumps(value, default=_refuse, option=_ORJSON_OPTS)
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def json_loads(data: bytes) -> Any:
    if _orjson is not None:
        return _orjson.loads(data)
    return json.loads(data)


def _msgpack() -> Any:
    try:
        import msgpack  # noqa: PLC0415 - optional extra, loaded on first use
    except ImportError as exc:
        raise ConfigurationError("codec 'msgpack' needs an extra: pip install hubbub[msgpack]") from exc
    return msgpack


def _msgpack_encode(value: Any) -> bytes:
    return bytes(_msgpack().packb(value, use_bin_type=True))


def _msgpack_decode(data: bytes) -> Any:
    return _msgpack().unpackb(data, raw=False)


CODECS: dict[str, Codec] = {
    "json": Codec("json", "application/json", json_dumps, json_loads),
    "msgpack": Codec("msgpack", "application/x-msgpack", _msgpack_encode, _msgpack_decode),
    "pickle": Codec(
        "pickle",
        "application/x-python-pickle",
        lambda value: pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL),
        pickle.loads,  # noqa: S301 - only reachable when the user accepts pickle explicitly
        trusted_only=True,
    ),
}
BY_CONTENT_TYPE = {codec.content_type: codec for codec in CODECS.values()}


def get_codec(name: str) -> Codec:
    """Look a codec up by name.

    Raises:
        ConfigurationError: the name is unknown.
    """
    try:
        return CODECS[name]
    except KeyError:
        known = ", ".join(sorted(CODECS))
        raise ConfigurationError(f"unknown serializer {name!r}; choose one of: {known}") from None


def codec_for(content_type: str, accept: frozenset[str]) -> Codec:
    """The codec for a received content type, if the worker accepts it.

    Raises:
        MessageError: the content type is unknown or not in ``accept``.
    """
    codec = BY_CONTENT_TYPE.get(content_type)
    if codec is None:
        raise MessageError(f"unknown content type {content_type!r}")
    if codec.name not in accept:
        raise MessageError(
            f"content type {content_type!r} is not accepted by this worker "
            f"(accepted: {', '.join(sorted(accept))})"
        )
    return codec
