"""Celery's task protocol v2 on the wire: read one into an ``Envelope``, build one from it.

A Celery v2 message is a kombu message: its body is the JSON ``[args, kwargs, embed]``
(``embed`` holds the canvas: ``callbacks``, ``errbacks``, ``chain``, ``chord``) and its
headers name the task (``task``, ``id``, ``retries``, ``eta``, ``expires``, ``timelimit``,
``root_id``, ``parent_id``, ``group``, ...). On RabbitMQ the headers and properties are
AMQP's own; on Redis the whole message is one JSON object (``body`` base64, ``headers``,
``properties``, ``content-type``) pushed on a list. Values JSON cannot hold travel as kombu's
``{"__type__": ..., "__value__": ...}`` objects.

Only JSON is read. A pickled body is refused with the reason and never unpickled; so are
YAML, msgpack and protocol v1 messages.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from hubbub.errors import MessageError
from hubbub.message import Envelope
from hubbub.results.base import ErrorInfo

from .canvas import CHAIN, plain_chain

IGNORE_RESULT = "celery_ignore_result"  # the sender asked Celery to keep no result

JSON_TYPE = "application/json"
# kombu's Redis transport: priority p goes to the list "<queue>\x06\x16<step>" (0 is the
# queue itself and is served first).
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
_CANVAS = ("chain", "callbacks", "errbacks", "chord")
_SERIALIZERS = {
    "application/x-python-serialize": "pickle",
    "application/x-yaml": "yaml",
    "application/x-msgpack": "msgpack",
}


class CeleryRefused(MessageError):
    """A Celery message the bridge will not run, and why.

    Attributes:
        task: the task name from its headers, when they name one.
        task_id: the task id from its headers, when they name one.
    """

    def __init__(self, reason: str, task: str | None = None, task_id: str | None = None):
        super().__init__(reason)
        self.task = task
        self.task_id = task_id


@dataclass(frozen=True, slots=True)
class CeleryMessage:
    """One Celery v2 task message, read but not yet trusted to run."""

    task: str
    id: str
    args: list[Any]
    kwargs: dict[str, Any]
    embed: dict[str, Any]
    headers: dict[str, Any]
    properties: dict[str, Any]

    def named(self) -> str:
        """``task 'shop.add' [id]``, for reasons and logs."""
        return f"Celery task {self.task!r} [{self.id}]"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _identity(headers: Mapping[str, Any]) -> tuple[str | None, str | None]:
    return _text(headers.get("task")), _text(headers.get("id"))


def _too_large(size: int, max_size: int | None, task: str | None = None,
               task_id: str | None = None) -> None:
    if max_size is not None and size > max_size:
        raise CeleryRefused(f"Celery message is {size} bytes, over the limit of {max_size} "
                            "(limits.max_message_size)", task, task_id)


def read_redis(payload: bytes, max_size: int | None = None) -> CeleryMessage:
    """A message as kombu's Redis transport stores it (one JSON object per list item).

    Raises:
        CeleryRefused: not a readable Celery v2 JSON message, or larger than ``max_size``
            bytes; the reason says why.
    """
    _too_large(len(payload), max_size)  # before parsing: nothing of it is read
    try:
        outer = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise CeleryRefused("not a Celery message: the Redis list item is not JSON") from None
    if not isinstance(outer, dict):
        raise CeleryRefused("not a Celery message: the Redis list item is not a JSON object")
    headers = outer.get("headers")
    properties = outer.get("properties")
    headers = headers if isinstance(headers, dict) else {}
    properties = properties if isinstance(properties, dict) else {}
    task, task_id = _identity(headers)
    raw = outer.get("body")
    if not isinstance(raw, str):
        raise CeleryRefused("Celery message has no body", task, task_id)
    if properties.get("body_encoding") == "base64":
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise CeleryRefused("Celery message body is not valid base64", task,
                                task_id) from None
    else:
        body = raw.encode("utf-8", "surrogatepass")
    return _read(body, outer.get("content-type"), outer.get("content-encoding"), headers,
                 properties)


def read_amqp(body: bytes, headers: Mapping[str, Any] | None, content_type: str | None,
              content_encoding: str | None, properties: Mapping[str, Any],
              max_size: int | None = None) -> CeleryMessage:
    """A message as it arrives from RabbitMQ: the body, the AMQP headers and properties.

    Raises:
        CeleryRefused: not a readable Celery v2 JSON message, or a body larger than
            ``max_size`` bytes; the reason says why.
    """
    _too_large(len(body), max_size, *_identity(headers or {}))
    return _read(body, content_type, content_encoding, dict(headers or {}), dict(properties))


def _read(body: bytes, content_type: Any, encoding: Any, headers: dict[str, Any],
          properties: dict[str, Any]) -> CeleryMessage:
    task, task_id = _identity(headers)
    if task is None or task_id is None:
        if "task" not in headers and "id" not in headers:
            raise CeleryRefused("not a Celery protocol v2 message (no task and id headers; "
                                "protocol 1 is not supported: set task_protocol=2)")
        raise CeleryRefused("Celery message headers lack a task name or an id", task, task_id)
    who = f"Celery task {task!r} [{task_id}]"
    kind = _SERIALIZERS.get(str(content_type))
    if kind is not None:
        raise CeleryRefused(f"{who} is serialized as {kind}; the bridge reads JSON only and "
                            f"never unpickles: send it with serializer='json'", task, task_id)
    if content_type not in (JSON_TYPE, "application/x-json"):
        raise CeleryRefused(f"{who} has content type {content_type!r}; the bridge reads "
                            f"application/json only", task, task_id)
    if encoding not in (None, "utf-8", "utf8"):
        raise CeleryRefused(f"{who} has content encoding {encoding!r}; expected utf-8", task,
                            task_id)
    try:
        decoded = json.loads(body, object_hook=_kombu_value, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CeleryRefused(f"{who}: body is not valid JSON ({str(exc)[:200]})", task,
                            task_id) from None
    if not (isinstance(decoded, list) and len(decoded) == 3):
        raise CeleryRefused(f"{who}: body is not protocol v2's [args, kwargs, embed]", task,
                            task_id)
    args, kwargs, embed = decoded
    if not isinstance(args, list):
        raise CeleryRefused(f"{who}: args must be a list", task, task_id)
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise CeleryRefused(f"{who}: kwargs must be an object with string keys", task, task_id)
    if embed is None:
        embed = {}
    if not isinstance(embed, dict):
        raise CeleryRefused(f"{who}: embed must be an object", task, task_id)
    return CeleryMessage(task, task_id, args, kwargs, embed, headers, properties)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _kombu_value(obj: dict[str, Any]) -> Any:
    """kombu's tagged values (datetime, date, time, decimal, uuid, bytes) back to Python."""
    if obj.keys() != {"__type__", "__value__"}:
        return obj
    kind, value = obj["__type__"], obj["__value__"]
    try:
        if kind == "datetime" and isinstance(value, str):
            return datetime.fromisoformat(value)
        if kind == "date" and isinstance(value, str):
            return datetime.fromisoformat(value).date()
        if kind == "time" and isinstance(value, str):
            return time.fromisoformat(value)
        if kind == "decimal" and isinstance(value, str):
            return Decimal(value)
        if kind == "uuid" and isinstance(value, dict) and isinstance(value.get("hex"), str):
            return uuid.UUID(hex=value["hex"])
        if kind == "bytes" and isinstance(value, str):
            return value.encode("utf-8")
        if kind == "base64" and isinstance(value, str):
            return base64.b64decode(value)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"kombu value of type {kind!r} does not decode") from exc
    return obj  # an unknown tag stays a plain object, as kombu leaves it


def _instant(value: Any, what: str, who: str, msg: CeleryMessage) -> float | None:
    """An ISO 8601 header (naive means UTC, as Celery's default) as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return when.timestamp()
    raise CeleryRefused(f"{who}: header {what!r} is not an ISO 8601 time ({value!r:.80})",
                        msg.task, msg.id)


def due_at(msg: CeleryMessage) -> float | None:
    """When ``msg`` may run (its ``eta``), in epoch seconds; None for now or unreadable (an
    unreadable eta is refused by :func:`to_envelope`, with the reason)."""
    try:
        return _instant(msg.headers.get("eta"), "eta", msg.named(), msg)
    except CeleryRefused:
        return None


def expires_at(msg: CeleryMessage) -> float | None:
    """When ``msg`` expires, in epoch seconds; None for never or unreadable."""
    try:
        return _instant(msg.headers.get("expires"), "expires", msg.named(), msg)
    except CeleryRefused:
        return None


def _limit(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
            and value > 0:
        return float(value)
    return None


def canvas_of(msg: CeleryMessage) -> str | None:
    """Which canvas parts a message carries (``"chain, chord"``), or None for a plain task.

    A group member is a plain task with a ``group`` header; it needs nothing more.
    """
    found = [name for name in _CANVAS if msg.embed.get(name)]
    return ", ".join(found) or None


def to_envelope(msg: CeleryMessage, queue: str, *, max_retries: int = 0,
                timeout: float | None = None, soft_timeout: float | None = None) -> Envelope:
    """The hubbub envelope that runs ``msg`` from ``queue``; the rest of a plain chain
    rides in its ``celery_chain`` header (``canvas.py``).

    ``max_retries`` and the time limits are the hubbub task's own (Celery keeps them in the
    task, not the message); Celery's ``timelimit`` header wins over the limits.

    Raises:
        CeleryRefused: a canvas the bridge cannot run (callbacks, errbacks, chord, a chain
            with any of them inside), a bad eta/expires header or a bad retries count.
    """
    who = msg.named()
    canvas = canvas_of(msg)
    chain = plain_chain(msg.embed.get("chain")) if canvas == "chain" else None
    if chain is not None:
        canvas = None  # a plain chain runs (canvas.py)
    elif canvas == "chain":
        canvas = "a chain with callbacks, chords or groups in it"
    if canvas is not None:
        raise CeleryRefused(f"{who} carries a Celery canvas ({canvas}), which the hubbub bridge "
                            "does not support: run it on a Celery worker, or rewrite the "
                            "workflow with hubbub's canvas", msg.task, msg.id)
    retries = msg.headers.get("retries") or 0
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise CeleryRefused(f"{who}: header 'retries' is not a count", msg.task, msg.id)
    limits = msg.headers.get("timelimit")
    hard, soft = (limits if isinstance(limits, list | tuple) and len(limits) == 2
                  else (None, None))
    return Envelope(
        task=msg.task, args=tuple(msg.args), kwargs=msg.kwargs, id=msg.id, queue=queue,
        eta=_instant(msg.headers.get("eta"), "eta", who, msg),
        expires=_instant(msg.headers.get("expires"), "expires", who, msg),
        retries=retries, max_retries=max(max_retries, retries),
        timeout=_limit(hard) or timeout, soft_timeout=_limit(soft) or soft_timeout,
        parent_id=_text(msg.headers.get("parent_id")),
        root_id=_text(msg.headers.get("root_id")) or msg.id,
        group_id=_text(msg.headers.get("group")),
        headers={"protocol": "celery", **({CHAIN: chain} if chain else {}),
                 **({IGNORE_RESULT: True} if msg.headers.get("ignore_result") is True else {})})


# -- building ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Built:
    """A Celery v2 message ready for a transport: JSON body, headers and properties."""

    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]


def kombu_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"__type__": "datetime", "__value__": value.isoformat()}
    if isinstance(value, date):
        return {"__type__": "date", "__value__": value.isoformat()}
    if isinstance(value, time):
        return {"__type__": "time", "__value__": value.isoformat()}
    if isinstance(value, Decimal):
        return {"__type__": "decimal", "__value__": str(value)}
    if isinstance(value, uuid.UUID):
        return {"__type__": "uuid", "__value__": {"hex": value.hex}}
    if isinstance(value, bytes):
        return {"__type__": "base64", "__value__": base64.b64encode(value).decode()}
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} cannot be sent to Celery as JSON")


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def build(env: Envelope, *, origin: str = "hubbub") -> Built:
    """The Celery v2 message for ``env`` (its id, name, arguments, eta, expires, retries,
    time limits, parent/root/group ids).

    Raises:
        MessageError: an argument cannot be encoded as JSON that Celery reads.
    """
    try:
        body = json.dumps([list(env.args), env.kwargs,
                           {"callbacks": None, "errbacks": None,
                            "chain": env.headers.get(CHAIN) or None, "chord": None}],
                          default=kombu_default, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise MessageError(f"arguments of Celery task {env.task!r} cannot be sent as "
                           f"JSON: {exc}") from exc
    headers: dict[str, Any] = {
        "lang": "py", "task": env.task, "id": env.id, "shadow": None,
        "eta": _iso(env.eta), "expires": _iso(env.expires), "group": env.group_id,
        "group_index": None, "retries": env.retries,
        "timelimit": [env.timeout, env.soft_timeout], "root_id": env.root_id or env.id,
        "parent_id": env.parent_id, "argsrepr": _short(env.args),
        "kwargsrepr": _short(env.kwargs), "origin": origin,
        "ignore_result": bool(env.headers.get(IGNORE_RESULT)),
        "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
    }
    properties: dict[str, Any] = {"correlation_id": env.id, "reply_to": "",
                                  "priority": env.priority}
    return Built(body, headers, properties)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 1024 else text[:1021] + "..."


def redis_payload(built: Built, queue: str) -> bytes:
    """``built`` as kombu's Redis transport stores it on the list of ``queue``."""
    properties = dict(built.properties)
    properties.update({
        "delivery_mode": 2, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        "delivery_info": {"exchange": "", "routing_key": queue},
    })
    return json.dumps({
        "body": base64.b64encode(built.body).decode(), "content-encoding": "utf-8",
        "content-type": JSON_TYPE, "headers": built.headers, "properties": properties,
    }).encode()


def priority_key(queue: str, priority: int) -> str:
    """The Redis list kombu keeps ``queue``'s messages of ``priority`` in."""
    step = max((s for s in PRIORITY_STEPS if s <= max(priority, 0)), default=0)
    return f"{queue}{PRIORITY_SEP}{step}" if step else queue


def failure_result(error: ErrorInfo) -> dict[str, Any]:
    """Celery's form of an exception: builtins keep their class, others their name."""
    module, _, name = error.type.rpartition(".")
    if not module:
        found = getattr(builtins, name, None)
        builtin = isinstance(found, type) and issubclass(found, BaseException)
        module = "builtins" if builtin else ""
    return {"exc_type": name, "exc_message": [error.message], "exc_module": module or None}


# -- recognising ------------------------------------------------------------------------------


def recognise(body: bytes, headers: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(task, id) when a body hubbub could not read is a Celery message, else None.

    On RabbitMQ the AMQP ``headers`` name them; on Redis the body is kombu's JSON envelope
    with its own ``headers``. Read without trusting anything: for a reason, never to run it.
    """
    if headers:
        task, task_id = _identity(headers)
        if task and task_id:
            return task, task_id
    if not body.startswith(b"{") or b'"headers"' not in body:
        return None
    try:
        outer = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    inner = outer.get("headers") if isinstance(outer, dict) else None
    if not isinstance(inner, dict) or "body" not in outer:
        return None
    task, task_id = _identity(inner)
    return (task, task_id) if task and task_id else None
