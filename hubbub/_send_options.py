"""Per-call send options (``SendOptions``) and the envelope built from them for one call."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hubbub._task_options import TaskOptions
from hubbub.context import maybe_current_task
from hubbub.errors import ConfigurationError
from hubbub.message import JSON_TYPE, Envelope, body_fields, envelope_of, new_id
from hubbub.settings import seconds


def utc_instant(value: datetime, name: str) -> float:
    """Epoch seconds of an aware datetime.

    Raises:
        ConfigurationError: the datetime is naive.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(
            f"{name} must be timezone-aware; use datetime.now(timezone.utc) or .replace(tzinfo=...)"
        )
    return value.astimezone(UTC).timestamp()


@dataclass(frozen=True, slots=True)
class SendOptions:
    """Per-call overrides of ``apply_async``."""

    countdown: float | timedelta | None = None
    eta: datetime | None = None
    expires: float | timedelta | datetime | None = None
    priority: int | None = None
    queue: str | None = None
    task_id: str | None = None
    headers: Mapping[str, Any] | None = field(default=None)


new_task_id = new_id  # the name the producer has always imported


def build_envelope(
    options: TaskOptions, default_queue: str, args: Iterable[Any], kwargs: Mapping[str, Any],
    send: SendOptions,
) -> Envelope:
    """The envelope for one call, with parent/root ids taken from the running task if any.

    Raises:
        ConfigurationError: naive datetimes, countdown with eta, bad priority.
    """
    now = time.time()
    if send.countdown is not None and send.eta is not None:
        raise ConfigurationError("give countdown or eta, not both")
    eta = None
    if send.countdown is not None:
        eta = now + seconds(send.countdown, "countdown")
    elif send.eta is not None:
        eta = utc_instant(send.eta, "eta")
    expires_in = send.expires if send.expires is not None else options.expires
    expires = None
    if isinstance(expires_in, datetime):
        expires = utc_instant(expires_in, "expires")
    elif expires_in is not None:
        expires = now + seconds(expires_in, "expires")
    priority = options.priority if send.priority is None else send.priority
    if not 0 <= priority <= 9:
        raise ConfigurationError(f"priority must be 0..9, got {priority}")
    parent = maybe_current_task()
    return envelope_of({  # every field, as Envelope(...) would take them
        "task": options.name,
        "args": tuple(args),
        "kwargs": dict(kwargs),
        "id": send.task_id or new_task_id(),
        "queue": send.queue or options.queue or default_queue,
        "priority": priority,
        "eta": eta,
        "expires": expires,
        "retries": 0,
        "max_retries": options.retries,
        "timeout": options.timeout,
        "soft_timeout": options.soft_timeout,
        "parent_id": parent.id if parent else None,
        "root_id": (parent.root_id or parent.id) if parent else None,
        "group_id": None,
        "headers": dict(send.headers) if send.headers else {},
        "created_at": now,
        "content_type": JSON_TYPE,
        "canvas": None,
    })


def plain_fields(options: TaskOptions, default_queue: str,
                 send: SendOptions) -> dict[str, Any] | None:
    """The body fields every send of a plain call shares (``message.body_fields``), with
    ``id`` and ``created_at`` to fill in; None when the call is not plain: it has a time
    (countdown, eta, expires), a given task id, headers, or a priority ``build_envelope``
    refuses (it then says why)."""
    if (send.countdown is not None or send.eta is not None or send.expires is not None
            or options.expires is not None or send.task_id is not None or send.headers):
        return None
    priority = options.priority if send.priority is None else send.priority
    if not 0 <= priority <= 9:
        return None
    return body_fields(Envelope(
        options.name, id="", queue=send.queue or options.queue or default_queue,
        priority=priority, max_retries=options.retries, timeout=options.timeout,
        soft_timeout=options.soft_timeout, created_at=0.0))


def merge_send(base: SendOptions, call: SendOptions) -> SendOptions:
    return SendOptions(**{
        name: getattr(call, name) if getattr(call, name) is not None else getattr(base, name)
        for name in SendOptions.__dataclass_fields__
    })
