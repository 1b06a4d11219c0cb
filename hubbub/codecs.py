"""Codecs turn task arguments into bytes and back.

JSON is the default (orjson when installed, else the standard library). msgpack is optional.
pickle exists only for users who ask for it by name, because unpickling runs code chosen by
whoever can write to the broker.

Values beyond plain JSON (datetime, Decimal, UUID, bytes, sets, tuples and the app's own types
added with :func:`register_type`) travel as tagged objects on JSON and msgpack; the tagging
lives in ``hubbub._tagging`` and its public names are re-exported here.
"""

from __future__ import annotations

import enum
import json
import math
import pickle
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hubbub._tagging import (
    JSON_MARK,
    MSGPACK_MARK,
    TAG,
    NonFinite,
    TypeCodec,
    Undecodable,
    Unencodable,
    explain,
    non_finite,
    pack,
    register_type,
    tagged,
    unpack,
    unregister_type,
)
from hubbub.errors import ConfigurationError, MessageError

__all__ = [
    "BY_CONTENT_TYPE",
    "CODECS",
    "JSON_MARK",
    "MSGPACK_MARK",
    "TAG",
    "Codec",
    "NonFinite",
    "TypeCodec",
    "Undecodable",
    "Unencodable",
    "codec_for",
    "explain",
    "get_codec",
    "json_dumps",
    "json_loads",
    "pack",
    "register_type",
    "tagged",
    "unpack",
    "unregister_type",
]

_orjson: Any
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
    # The same answers with or without orjson, so a payload never depends on what is
    # installed: datetimes and dataclasses are refused by both, int keys become strings in
    # both, UUIDs and enums are written as their string / value by both, NaN becomes null.
    _ORJSON_OPTS = (_orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS
                    | _orjson.OPT_NON_STR_KEYS)


def _default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (what orjson writes for them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _stdlib_dumps(value: Any) -> bytes:
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          default=_default)
    except ValueError:  # NaN or an infinity somewhere: write null, as orjson does
        text = json.dumps(_finite(value), separators=(",", ":"), ensure_ascii=False,
                          default=_default)
    return text.encode()


def json_dumps(value: Any) -> bytes:
    """Encode JSON; raises TypeError/ValueError for anything JSON cannot hold."""
    if _orjson is not None:
        try:
            data: bytes = _orjson.dumps(value, default=_default, option=_ORJSON_OPTS)
        except TypeError as exc:
            if "64-bit" not in str(exc):
                raise
        else:
            return data
    return _stdlib_dumps(value)  # no orjson, or integers past 64 bits


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_loads(data: bytes) -> Any:
    """Decode JSON; raises ValueError for anything that is not strict JSON."""
    if _orjson is not None:
        return _orjson.loads(data)
    try:
        return json.loads(data, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _msgpack() -> Any:
    try:
        import msgpack  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigurationError(
            "codec 'msgpack' needs an extra: pip install hubbub[msgpack]"
        ) from exc
    return msgpack


def _msgpack_encode(value: Any) -> bytes:
    return bytes(_msgpack().packb(pack(value, binary=True), use_bin_type=True))


def _msgpack_decode(data: bytes) -> Any:
    value = _msgpack().unpackb(data, raw=False)
    return unpack(value) if tagged(data, MSGPACK_MARK) else value


def _json_encode(value: Any) -> bytes:
    return json_dumps(pack(value))


def _json_decode(data: bytes) -> Any:
    value = json_loads(data)
    return unpack(value) if tagged(data) else value


def _refuse_non_finite(value: Any) -> None:
    """Pickle could carry NaN, but a message must mean the same whatever its codec."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise non_finite(item)
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _pickle_encode(value: Any) -> bytes:
    _refuse_non_finite(value)
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


CODECS: dict[str, Codec] = {
    "json": Codec("json", "application/json", _json_encode, _json_decode),
    "msgpack": Codec("msgpack", "application/x-msgpack", _msgpack_encode, _msgpack_decode),
    "pickle": Codec(  # carries every picklable value itself: no tags
        "pickle",
        "application/x-python-pickle",
        _pickle_encode,
        pickle.loads,
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
