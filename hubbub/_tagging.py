"""Type tagging: the values beyond plain JSON that every codec of hubbub carries.

datetime, date, time, timedelta, Decimal, UUID, bytes, set, frozenset, tuple, and the app's
own types added with :func:`register_type` travel as tagged objects,
``{"__hubbub__": "datetime", "v": "2024-01-02T03:04:00+00:00"}``, made by :func:`pack` before
the bytes are written and read back by :func:`unpack`. Decoding only walks what it parsed when
the raw bytes hold the tag key (:func:`tagged`), so a plain-JSON payload comes back exactly as
the parser made it. A user dict that happens to hold the tag key is escaped
(``{"__hubbub__": "dict", "v": [[key, value], ...]}``). A tag names an entry of the registry,
never a class to import: an unknown tag is an error.

The registry is per process, not per hub: result stores and workers decode without a hub at
hand, and a producer and its workers import the same app, which registers the same types.
``hubbub.codecs`` re-exports every public name here; import them from there.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hubbub.errors import ConfigurationError

TAG = "__hubbub__"
_TOO_DEEP = "it is nested too deeply"
JSON_MARK = b'"__hubbub__"'  # in JSON bytes, the key of every tagged object
MSGPACK_MARK = TAG.encode()  # msgpack writes strings as raw UTF-8 after a length prefix


class Unencodable(TypeError, ValueError):
    """A value no codec of hubbub can carry; ``str()`` says what, :func:`explain` where."""


class Undecodable(ValueError):
    """A tagged object that cannot be turned back into a value (unknown or malformed tag)."""


@dataclass(frozen=True, slots=True)
class TypeCodec:
    """How one type travels: ``encode`` makes a JSON-able value, ``decode`` reverses it."""

    name: str
    cls: type
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]
    builtin: bool = False


def _decoder(kind: type, what: str, convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A ``decode`` that refuses anything but a ``kind`` (``what`` names it in the error)."""
    def decode(value: Any) -> Any:
        if not isinstance(value, kind):
            raise TypeError(f"expected {what}, got {type(value).__name__}")
        return convert(value)
    return decode


def _text(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    return _decoder(str, "a string", parse)


def _timedelta(value: Any) -> dt.timedelta:
    days, seconds, micros = value  # exact: a float of seconds would round microseconds
    if not all(type(n) is int for n in (days, seconds, micros)):
        raise TypeError("expected [days, seconds, microseconds] integers")
    return dt.timedelta(days=days, seconds=seconds, microseconds=micros)


_b64 = _decoder(str, "a base64 string", lambda v: base64.b64decode(v, validate=True))


def _items(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return _decoder(list, "a list", kind)


def _escaped_dict(value: Any) -> dict[Any, Any]:
    if not isinstance(value, list) or not all(
        isinstance(pair, list) and len(pair) == 2 for pair in value
    ):
        raise TypeError("expected a list of [key, value] pairs")
    return dict(value)


# Containers (tuple, set, frozenset, the escaped dict) are packed by the walker itself, which
# tags their items; their ``encode`` is never called.
_BUILTIN_TYPES = (
    TypeCodec("datetime", dt.datetime, dt.datetime.isoformat,
              _text(dt.datetime.fromisoformat), builtin=True),
    TypeCodec("date", dt.date, dt.date.isoformat, _text(dt.date.fromisoformat),
              builtin=True),
    TypeCodec("time", dt.time, dt.time.isoformat, _text(dt.time.fromisoformat),
              builtin=True),
    TypeCodec("timedelta", dt.timedelta, lambda d: [d.days, d.seconds, d.microseconds],
              _timedelta, builtin=True),
    TypeCodec("uuid", uuid.UUID, str, _text(uuid.UUID), builtin=True),
    TypeCodec("bytes", bytes, lambda b: base64.b64encode(b).decode(), _b64, builtin=True),
    TypeCodec("tuple", tuple, list, _items(tuple), builtin=True),
    TypeCodec("set", set, list, _items(set), builtin=True),
    TypeCodec("frozenset", frozenset, list, _items(frozenset), builtin=True),
    TypeCodec("dict", dict, list, _escaped_dict, builtin=True),
)
_BY_NAME: dict[str, TypeCodec] = {t.name: t for t in _BUILTIN_TYPES}
_BY_CLASS: dict[type, TypeCodec] = {t.cls: t for t in _BUILTIN_TYPES if t.name != "dict"}
_PLAIN = (str, int, float, bool, type(None), list, dict)


def _add_decimal() -> TypeCodec:
    """Register ``Decimal``, the one built-in type whose module is left unimported until it
    is needed: ``decimal`` (with ``numbers``, about 120 KiB) would otherwise sit in every
    worker and producer (issue #18). It is needed when a "decimal" tag is decoded or named
    by :func:`register_type`, and when ``decimal`` is loaded: only then can a Decimal exist,
    to be encoded or registered (:func:`_decimal_loaded`)."""
    import decimal

    entry = _BY_NAME.get("decimal")
    if entry is None:
        entry = TypeCodec("decimal", decimal.Decimal, str, _text(decimal.Decimal), builtin=True)
        _BY_NAME["decimal"] = entry
        _BY_CLASS[decimal.Decimal] = entry
    return entry


def _decimal_loaded() -> bool:
    """Whether a Decimal may exist in this process but is not registered yet (the C module
    ``_decimal`` is checked too: ``decimal.Decimal`` is its class)."""
    return "decimal" not in _BY_NAME and ("decimal" in sys.modules
                                          or "_decimal" in sys.modules)


def register_type(cls: type, *, name: str, encode: Callable[[Any], Any],
                  decode: Callable[[Any], Any]) -> None:
    """Let ``cls`` travel in arguments and results, tagged with ``name``.

    Registering the same class under the same name again replaces its functions (a module
    imported twice). See :meth:`hubbub.Hub.register_type`.

    Raises:
        ConfigurationError: ``name`` is taken by another class or by a built-in tag, ``cls``
            is registered under another name, or ``cls`` is a type JSON or hubbub already
            carries.
    """
    if not isinstance(cls, type):
        raise ConfigurationError(f"register_type needs a class, not {cls!r}")
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"register_type({cls.__qualname__}) needs a non-empty name")
    if not callable(encode) or not callable(decode):
        raise ConfigurationError(f"register_type({cls.__qualname__}) needs callable "
                                 "encode and decode functions")
    if name == "decimal" or _decimal_loaded():
        _add_decimal()
    if cls in _PLAIN or (cls in _BY_CLASS and _BY_CLASS[cls].builtin):
        raise ConfigurationError(f"{cls.__qualname__} already travels without registering")
    taken = _BY_NAME.get(name)
    if taken is not None and (taken.builtin or taken.cls is not cls):
        holder = "a built-in type" if taken.builtin else _qualified(taken.cls)
        raise ConfigurationError(f"type name {name!r} is already registered for {holder}; "
                                 f"register {_qualified(cls)} under another name")
    known = _BY_CLASS.get(cls)
    if known is not None and known.name != name:
        raise ConfigurationError(f"{_qualified(cls)} is already registered as "
                                 f"{known.name!r}; a class has one name")
    entry = TypeCodec(name, cls, encode, decode)
    _BY_NAME[name] = entry
    _BY_CLASS[cls] = entry


def unregister_type(name: str) -> None:
    """Forget an app type (tests use it to keep the process-wide registry clean)."""
    entry = _BY_NAME.get(name)
    if entry is not None and not entry.builtin:
        del _BY_NAME[name]
        del _BY_CLASS[entry.cls]


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class NonFinite(Unencodable):
    """A float NaN or infinity: JSON has none, so no codec carries them."""


def non_finite(value: float) -> NonFinite:
    return NonFinite(f"cannot encode float {value!r}: JSON has no NaN or infinity")


def _find_codec(value: Any) -> TypeCodec | None:
    """The registered codec for ``value``'s class or its nearest registered base class."""
    if _decimal_loaded():
        _add_decimal()
    for base in type(value).__mro__:
        entry = _BY_CLASS.get(base)
        if entry is not None:
            return entry
    return None


def _pack(value: Any, binary: bool) -> Any:
    kind = type(value)
    # Invariant: the first branches are the plain-JSON types, in the order they are common,
    # so a plain payload costs a type check per node and no allocation past its containers.
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if value - value != 0.0:  # NaN or an infinity
            raise non_finite(value)
        return value
    if kind is list:
        return [_pack(item, binary) for item in value]
    if kind is dict:
        if TAG in value:
            return {TAG: "dict", "v": [[k, _pack(v, binary)] for k, v in value.items()]}
        return {k: _pack(v, binary) for k, v in value.items()}
    if kind is tuple:
        return {TAG: "tuple", "v": [_pack(item, binary) for item in value]}
    if kind is bytes and binary:
        return value
    return _pack_other(value, binary)


def _pack_other(value: Any, binary: bool) -> Any:
    entry = _BY_CLASS.get(type(value))
    if entry is None:
        if isinstance(value, enum.Enum):  # written as its value, as before tagging existed
            return _pack(value.value, binary)
        if isinstance(value, str | int):  # subclasses JSON writes as their base
            return value
        if isinstance(value, float):
            return _pack(float(value), binary)
        if isinstance(value, list):
            return [_pack(item, binary) for item in value]
        if isinstance(value, dict):
            return _pack(dict(value), binary)
        entry = _find_codec(value)  # a subclass of a registered type (a named tuple too)
        if entry is None:
            raise Unencodable(f"cannot encode object of type {type(value).__name__}")
    if entry.cls in (tuple, set, frozenset):
        items = [_pack(item, binary) for item in value]
        return {TAG: entry.name, "v": items}
    if entry.cls is bytes and binary:
        return bytes(value)
    try:
        encoded = entry.encode(value)
    except Exception as exc:  # an app's function may raise anything
        raise Unencodable(f"type {entry.name!r} could not encode "
                          f"{type(value).__name__}: {exc}") from exc
    return {TAG: entry.name, "v": _pack(encoded, binary)}


def pack(value: Any, *, binary: bool = False) -> Any:
    """``value`` as plain JSON types, with everything else tagged.

    Args:
        value: what to encode.
        binary: leave ``bytes`` as they are (msgpack carries them natively).

    Returns:
        A structure of dict, list, str, int, float, bool and None (and bytes with ``binary``).

    Raises:
        Unencodable: a value of a type neither JSON nor the registry knows, a NaN or an
            infinity, a registered type whose ``encode`` raised, or nesting too deep.
    """
    try:
        if _plain(value):  # the common case: a check per node, no copy
            return value
        return _pack(value, binary)
    except RecursionError:
        raise Unencodable(_TOO_DEEP) from None


_LEAVES = frozenset({str, int, bool, type(None)})


def _plain(value: Any) -> bool:
    """Whether ``value`` is plain JSON already: nothing to tag, escape or refuse.

    A type check per node and no copy, so that it costs less than the copying walk
    (:func:`_pack`) it saves; any other value makes that walk decide.
    """
    kind = type(value)
    if kind is dict:
        if TAG in value:
            return False
        items: Any = value.values()
    elif kind is list:
        items = value
    elif kind in _LEAVES:
        return True
    elif kind is float:
        return bool(value - value == 0.0)  # False for NaN and infinities
    else:
        return False
    for item in items:  # leaves inline: most nodes are leaves, a call each would double this
        kind = type(item)
        if kind in _LEAVES:
            continue
        if kind is float:
            if item - item != 0.0:
                return False
        elif not _plain(item):
            return False
    return True


def _unpack(value: Any) -> Any:
    if type(value) is list:
        for i, item in enumerate(value):  # in place: the parser's fresh lists are ours
            if type(item) is list or type(item) is dict:
                value[i] = _unpack(item)
        return value
    if type(value) is not dict:
        return value
    if TAG not in value:
        for key, item in value.items():
            if type(item) is list or type(item) is dict:
                value[key] = _unpack(item)
        return value
    name = value[TAG]
    entry = _BY_NAME.get(name) if isinstance(name, str) else None
    if entry is None and name == "decimal":
        entry = _add_decimal()
    if entry is None:
        raise Undecodable(f"unknown type tag {name!r}: register it with hub.register_type() "
                          "in the app on this side too")
    if len(value) != 2 or "v" not in value:
        raise Undecodable(f"malformed {name!r} tag: expected exactly the keys {TAG!r} and 'v'")
    inner = value["v"]
    if entry.name != "dict" or not isinstance(inner, list):
        inner = _unpack(inner)
    else:  # keys of an escaped dict are kept as they are; only its values are tagged
        inner = [[pair[0], _unpack(pair[1])] if isinstance(pair, list) and len(pair) == 2
                 else pair for pair in inner]
    try:
        return entry.decode(inner)
    except Exception as exc:  # an app's function may raise anything
        raise Undecodable(f"type {name!r} could not decode its value: {exc}") from exc


def unpack(value: Any) -> Any:
    """Turn the tagged objects in a parsed structure back into values (mutates it).

    Raises:
        Undecodable: a tag no type is registered for, a malformed tagged object, or a
            registered ``decode`` that raised.
    """
    try:
        return _unpack(value)
    except RecursionError:
        raise Undecodable("it is nested too deeply") from None


def tagged(data: bytes, mark: bytes = JSON_MARK) -> bool:
    """Whether the raw bytes may hold a tagged object, so that :func:`unpack` has work."""
    return mark in data


def explain(value: Any, root: str) -> str:
    """Where and why ``value`` cannot be packed: ``"result[2]['when']: cannot encode ..."``.

    Only for a value :func:`pack` refused; it walks down to the first part that fails.
    """
    path = root
    try:
        pack(value)
    except Unencodable as exc:
        if str(exc) == _TOO_DEEP:  # walking down would repeat that walk at every level
            return f"{path}: {exc}"
    try:
        while True:
            children: list[tuple[str, Any]]
            if isinstance(value, dict):
                children = [(f"[{k!r}]", v) for k, v in value.items()]
            elif isinstance(value, list | tuple):
                children = [(f"[{i}]", v) for i, v in enumerate(value)]
            elif isinstance(value, set | frozenset):
                children = [("{item}", v) for v in value]
            else:
                break
            for step, child in children:
                try:
                    pack(child)
                except Unencodable:
                    path, value = path + step, child
                    break
            else:
                break
        pack(value)
    except Unencodable as exc:
        return f"{path}: {exc}"
    return f"{path}: cannot be encoded"
