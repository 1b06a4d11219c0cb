"""The envelope: one versioned message shape for every transport.

The envelope itself is always JSON so that any tool can read its routing data. Arguments
are inline JSON by default, with values plain JSON cannot hold tagged (see
:mod:`hubbub.codecs`); with another codec they travel as a base64 ``payload`` with its
``content_type``. Everything received is validated before a task sees it.
"""

from __future__ import annotations

import base64
import binascii
import operator
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from hubbub._slots import slot_setters
from hubbub.codecs import (
    BY_CONTENT_TYPE,
    Codec,
    NonFinite,
    Undecodable,
    Unencodable,
    codec_for,
    explain,
    json_dumps,
    json_loads,
    pack,
    tagged,
    unpack,
)
from hubbub.errors import MessageError, MessageTooLarge
from hubbub.signing import PREFIX as SIGNED
from hubbub.signing import Signer, unverified_body

VERSION = 1
JSON_TYPE = "application/json"
DEFAULT_MAX_SIZE = 256 * 1024


# uuid4's version (4) and variant (RFC 4122) bits, set in 128 random bits.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_id() -> str:
    """A fresh task id: ``uuid.uuid4().hex``, the same 32 hex digits, at a third of its
    cost (no ``UUID`` object is built; this runs once per send, and per canvas node)."""
    return f"{int.from_bytes(os.urandom(16)) & _UUID4_CLEAR | _UUID4_SET:032x}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One task invocation as it travels through a broker.

    Times (``eta``, ``expires``, ``created_at``) are float seconds since the epoch, UTC.
    ``retries`` counts attempts already retried; ``max_retries`` is how many are allowed.
    """

    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    queue: str = "default"
    priority: int = 0
    eta: float | None = None
    expires: float | None = None
    retries: int = 0
    max_retries: int = 0
    timeout: float | None = None
    soft_timeout: float | None = None
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    content_type: str = JSON_TYPE
    # -- canvas: what follows this task (hubbub.canvas.nodes), checked by the worker
    canvas: dict[str, Any] | None = None

    def next_attempt(self, eta: float) -> Envelope:
        """The envelope for the next retry, due at ``eta``."""
        return replace(self, retries=self.retries + 1, eta=eta)


_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    # name: (types allowed, may be null)
    "task": (str, False),
    "id": (str, False),
    "queue": (str, False),
    "priority": (int, False),
    "eta": ((int, float), True),
    "expires": ((int, float), True),
    "retries": (int, False),
    "max_retries": (int, False),
    "timeout": ((int, float), True),
    "soft_timeout": ((int, float), True),
    "parent_id": (str, True),
    "root_id": (str, True),
    "group_id": (str, True),
    "headers": (dict, False),
    "created_at": ((int, float), False),
    "content_type": (str, False),
}


# Whether a field's value is allowed depends only on its type (None included), so the
# type signatures of bodies that passed the full check are kept: a body with a known one
# passes with one set look-up. Bounded, so odd bodies cannot grow it without limit.
_NAMES = tuple(_FIELDS)
_VALUES = operator.itemgetter(*_NAMES)  # every field's value in one call (KeyError: missing)
_ATTRIBUTES = operator.attrgetter(*_NAMES)  # an envelope's, the same way
_PLAIN: set[tuple[type, ...]] = set()
_PLAIN_MAX = 256

_NON_EMPTY = ("task", "id", "queue")
_NON_NEGATIVE = ("retries", "max_retries")


def _utf8(text: str) -> bool:
    """False when ``text`` holds a lone surrogate, which no store or broker can carry."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encode(envelope: Envelope, codec: Codec, max_size: int = DEFAULT_MAX_SIZE,
           signer: Signer | None = None) -> bytes:
    """Serialize an envelope.

    Raises:
        MessageError: an argument cannot be encoded by ``codec``.
        MessageTooLarge: the body is larger than ``max_size`` bytes.
    """
    return encode_fields(body_fields(envelope), envelope.args, envelope.kwargs, codec,
                         max_size, signer, envelope.canvas)


def body_fields(envelope: Envelope) -> dict[str, Any]:
    """The routing fields of ``envelope``'s body, in the order ``encode`` writes them: a
    template that ``encode_fields`` fills per send."""
    return {"v": VERSION, **dict(zip(_NAMES, _ATTRIBUTES(envelope), strict=True))}


def encode_fields(body: dict[str, Any], args: Sequence[Any], kwargs: dict[str, Any],
                  codec: Codec, max_size: int = DEFAULT_MAX_SIZE,
                  signer: Signer | None = None, canvas: dict[str, Any] | None = None) -> bytes:
    """``encode`` of an envelope given as its fields: ``body`` (a fresh copy of a
    ``body_fields`` template, filled in; it is added to), its arguments and canvas apart.
    What ``encode`` writes, without building the ``Envelope`` (a send's quick path).

    Raises:
        MessageError: an argument cannot be encoded by ``codec``.
        MessageTooLarge: the body is larger than ``max_size`` bytes.
    """
    body["content_type"] = codec.content_type
    try:
        if codec.content_type == JSON_TYPE:  # inline, tagged where JSON falls short
            body["args"] = pack(list(args))
            body["kwargs"] = pack(kwargs)
        else:
            packed = codec.encode([list(args), kwargs])
            body["payload"] = base64.b64encode(packed).decode()
        if canvas is not None:  # -- canvas: inline JSON on every codec
            body["canvas"] = pack(canvas)
        data = json_dumps(body)
    except NonFinite as exc:
        raise MessageError(f"arguments of task {body['task']!r} hold NaN or an infinity, "
                           f"which JSON cannot carry: {_where(args, kwargs)}") from exc
    except Unencodable as exc:
        raise MessageError(f"arguments of task {body['task']!r} cannot be encoded as "
                           f"{codec.name}: {_where(args, kwargs)}") from exc
    except (TypeError, ValueError, OverflowError) as exc:
        raise MessageError(
            f"arguments of task {body['task']!r} cannot be encoded as {codec.name}: {exc}"
        ) from exc
    if signer is not None:
        data = signer.sign(data)
    if len(data) > max_size:
        raise MessageTooLarge(
            f"message for task {body['task']!r} is {len(data)} bytes, over the limit of "
            f"{max_size}; store large data elsewhere and pass a reference"
        )
    return data


# One message as its parts: the body fields (a ``body_fields`` template, filled in), the
# arguments, the kwargs and the canvas. ``encode_fields(fields, args, kwargs, ..., canvas)``
# writes what ``encode`` writes of ``envelope_of_parts(parts)``: a canvas send builds its
# bytes from them with no Envelope (``Producer.publish_parts``).
Parts = tuple[dict[str, Any], list[Any], dict[str, Any], dict[str, Any] | None]


def envelope_of_parts(parts: Parts) -> Envelope:
    """The Envelope of a message given as its parts (see ``Parts``)."""
    fields, args, kwargs, canvas = parts
    values = fields.copy()
    values["args"], values["kwargs"], values["canvas"] = tuple(args), dict(kwargs), canvas
    return envelope_of(values)


def _where(args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """Which argument cannot be packed, and why (``args[1]['when']: cannot encode ...``)."""
    try:
        pack(list(args))
    except Unencodable:
        return explain(list(args), "args")
    return explain(kwargs, "kwargs")


def decode(
    data: bytes, accept: frozenset[str] = frozenset({"json"}), max_size: int = DEFAULT_MAX_SIZE,
    signer: Signer | None = None,
) -> Envelope:
    """Parse and validate a received body.

    Raises:
        MessageError: the body is too large, unsigned or badly signed (when ``signer`` is
            given), malformed, of another version, of a content type the worker does not
            accept, or has fields of the wrong type. The message says which.
    """
    if len(data) > max_size:
        raise MessageTooLarge(f"message is {len(data)} bytes, over the limit of {max_size}")
    if signer is not None:
        data = signer.verify(data)  # before anything in it is parsed
    elif data.startswith(SIGNED):
        raise MessageError("message is signed but this worker has no signing keys; "
                           "configure signing_keys")
    try:
        body = json_loads(data)
    except (ValueError, TypeError) as exc:
        raise MessageError(f"malformed message: not JSON ({exc})") from exc
    except RecursionError:
        raise MessageError("malformed message: nested too deeply to parse") from None
    if not isinstance(body, dict):
        raise MessageError("malformed message: not a JSON object")
    if isinstance(body.get("v"), bool) or body.get("v") != VERSION:
        raise MessageError(f"unsupported message version {body.get('v')!r} (expected {VERSION})")
    # A lone surrogate can only come from a \\u escape: plain messages skip the check.
    escapes = b"\\u" in data
    if not escapes:
        plain = _plain(data, body, accept)
        if plain is not None:
            return plain
    values = None if escapes else _plain_fields(body)
    if values is None:
        values = _checked_fields(body, escapes)
    for name in _NON_EMPTY:
        if not values[name]:
            raise MessageError(f"malformed message: field {name!r} is empty")
    for name in _NON_NEGATIVE:
        if values[name] < 0:
            raise MessageError(f"malformed message: field {name!r} is negative")
    try:
        args, kwargs = _arguments(data, body, values["content_type"], accept)
    except Undecodable as exc:  # before the generic handlers: say which task, and why
        raise MessageError(f"arguments of task {values['task']!r} cannot be decoded: "
                           f"{exc}") from exc
    values["args"], values["kwargs"] = tuple(args), kwargs
    values["canvas"] = _canvas(data, body)
    return envelope_of(values)


# Every received message and every send builds an Envelope, slot by slot (hubbub._slots: it
# has no __post_init__, and every field is given, so no default applies). A field added to
# Envelope without a value in a caller fails at once (KeyError).
_SLOTS = tuple(zip((f.name for f in fields(Envelope)), slot_setters(Envelope), strict=True))


def envelope_of(values: dict[str, Any]) -> Envelope:
    """``Envelope(**values)`` with every field given, made faster (no defaults applied)."""
    envelope: Envelope = object.__new__(Envelope)
    for name, put in _SLOTS:
        put(envelope, values[name])
    return envelope


# Each field's slot setter, for _plain: the routing fields in _VALUES's order, then the
# three decode adds.
(_PUT_TASK, _PUT_ID, _PUT_QUEUE, _PUT_PRIORITY, _PUT_ETA, _PUT_EXPIRES, _PUT_RETRIES,
 _PUT_MAX_RETRIES, _PUT_TIMEOUT, _PUT_SOFT_TIMEOUT, _PUT_PARENT_ID, _PUT_ROOT_ID,
 _PUT_GROUP_ID, _PUT_HEADERS, _PUT_CREATED_AT, _PUT_CONTENT_TYPE) = slot_setters(Envelope,
                                                                                 _NAMES)
_PUT_ARGS, _PUT_KWARGS, _PUT_CANVAS = slot_setters(Envelope, ("args", "kwargs", "canvas"))
assert {f.name for f in fields(Envelope)} == {*_NAMES, "args", "kwargs", "canvas"}
assert _NAMES == ("task", "id", "queue", "priority", "eta", "expires", "retries",
                  "max_retries", "timeout", "soft_timeout", "parent_id", "root_id", "group_id",
                  "headers", "created_at", "content_type"), "_plain's order"
_JSON_NAME = BY_CONTENT_TYPE[JSON_TYPE].name  # what a worker's ``accept`` calls JSON


def _plain(data: bytes, body: dict[str, Any], accept: frozenset[str]) -> Envelope | None:
    """``decode``'s quick path, for the usual message: field types seen to pass before,
    nothing empty or negative, JSON arguments with nothing tagged, no canvas. None: the
    long way, which also says what is wrong."""
    try:
        values = _VALUES(body)
    except KeyError:
        return None
    if tuple(map(type, values)) not in _PLAIN:
        return None
    (task, task_id, queue, priority, eta, expires, retries, max_retries, timeout, soft_timeout,
     parent_id, root_id, group_id, headers, created_at, content_type) = values
    if (not (task and task_id and queue) or retries < 0 or max_retries < 0
            or content_type != JSON_TYPE or _JSON_NAME not in accept or tagged(data)
            or body.get("canvas") is not None):
        return None
    args, kwargs = body.get("args"), body.get("kwargs")
    # JSON object keys are strings: a dict here is a valid kwargs.
    if type(args) is not list or type(kwargs) is not dict:
        return None
    # Slot by slot, written out: a loop over the setters costs 40% more (every task).
    envelope: Envelope = object.__new__(Envelope)
    _PUT_TASK(envelope, task)
    _PUT_ID(envelope, task_id)
    _PUT_QUEUE(envelope, queue)
    _PUT_PRIORITY(envelope, priority)
    _PUT_ETA(envelope, eta)
    _PUT_EXPIRES(envelope, expires)
    _PUT_RETRIES(envelope, retries)
    _PUT_MAX_RETRIES(envelope, max_retries)
    _PUT_TIMEOUT(envelope, timeout)
    _PUT_SOFT_TIMEOUT(envelope, soft_timeout)
    _PUT_PARENT_ID(envelope, parent_id)
    _PUT_ROOT_ID(envelope, root_id)
    _PUT_GROUP_ID(envelope, group_id)
    _PUT_HEADERS(envelope, headers)
    _PUT_CREATED_AT(envelope, created_at)
    _PUT_CONTENT_TYPE(envelope, content_type)
    _PUT_ARGS(envelope, tuple(args))
    _PUT_KWARGS(envelope, kwargs)
    _PUT_CANVAS(envelope, None)
    return envelope


def _plain_fields(body: dict[str, Any]) -> dict[str, Any] | None:
    """The envelope's fields when their types were seen to pass before; None: check them."""
    try:
        values = _VALUES(body)
    except KeyError:
        return None  # the full check names the missing field
    return dict(zip(_NAMES, values, strict=True)) if tuple(map(type, values)) in _PLAIN else None


def _checked_fields(body: dict[str, Any], escapes: bool) -> dict[str, Any]:
    """The envelope's fields, each checked; raises MessageError naming the first bad one."""
    values: dict[str, Any] = {}
    for name, (types, nullable) in _FIELDS.items():
        if name not in body:
            raise MessageError(f"malformed message: field {name!r} is missing")
        value = body[name]
        ok = (value is None and nullable) or (
            isinstance(value, types) and not isinstance(value, bool)
        )
        if not ok:
            raise MessageError(f"malformed message: field {name!r} has a wrong type")
        if escapes and isinstance(value, str) and not _utf8(value):
            raise MessageError(f"malformed message: field {name!r} is not valid text "
                               "(it holds a lone surrogate)")
        values[name] = value
    if len(_PLAIN) < _PLAIN_MAX:
        _PLAIN.add(tuple(map(type, values.values())))
    return values


def _canvas(data: bytes, body: dict[str, Any]) -> dict[str, Any] | None:
    """The envelope's ``canvas`` field, unpacked; its contents are checked by the worker
    (``hubbub.canvas.nodes.check_followups``)."""
    canvas = body.get("canvas")
    if canvas is None:
        return None
    if not isinstance(canvas, dict):
        raise MessageError("malformed message: field 'canvas' must be an object")
    if tagged(data):
        try:
            canvas = unpack(canvas)
        except Undecodable as exc:
            raise MessageError(f"malformed message: field 'canvas' cannot be decoded: {exc}"
                               ) from exc
    return canvas if isinstance(canvas, dict) else None


def _arguments(data: bytes, body: dict[str, Any], content_type: str,
               accept: frozenset[str]) -> tuple[Any, Any]:
    codec = codec_for(content_type, accept)
    if content_type == JSON_TYPE:
        args, kwargs = body.get("args"), body.get("kwargs")
        if tagged(data):  # else nothing to walk: plain JSON is used as parsed
            args, kwargs = unpack(args), unpack(kwargs)
    else:
        payload = body.get("payload")
        if not isinstance(payload, str):
            raise MessageError("malformed message: field 'payload' is missing")
        try:
            args, kwargs = codec.decode(base64.b64decode(payload, validate=True))
        except Undecodable:
            raise
        except (binascii.Error, ValueError, TypeError) as exc:
            raise MessageError(f"malformed message: payload does not decode ({exc})") from exc
        except Exception as exc:  # a codec's own error type, e.g. msgpack's or pickle's
            raise MessageError(f"malformed message: payload does not decode ({exc})") from exc
    if not isinstance(args, list):
        raise MessageError("malformed message: 'args' must be a list")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise MessageError("malformed message: 'kwargs' must be an object with string keys")
    return args, kwargs


def peek_id(data: bytes) -> str | None:
    """The task id of a body that may be malformed, for reporting; None when unreadable."""
    try:
        body = json_loads(unverified_body(data))
    except (ValueError, TypeError, RecursionError, MemoryError):
        return None
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, str) and value and _utf8(value) else None
