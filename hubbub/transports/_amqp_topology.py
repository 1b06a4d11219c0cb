"""What the RabbitMQ transport names and declares: URL lists, queue and exchange names,
the headers a message carries, the delay cascade (see docs/amqp.md, "Delays"), and reading
queues without consuming them (browse, ready counts).

Level k of the cascade is a queue per target queue whose messages live ``UNIT * 2**k``
seconds and then dead-letter into the headers exchange of level k-1 (level 0 into the
target). A message delayed by n units carries the bits of n in headers ``hubbub-d<k>`` and
is published to the exchange of n's highest bit; each exchange passes it to its level queue
when its bit is 1 and on to the exchange below when it is 0.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    DeliveryMode,
    ExchangeType,
)
from aio_pika.exceptions import ChannelNotFoundEntity

from hubbub._redact import redact
from hubbub._text import cap, clean_text
from hubbub.errors import ConfigurationError
from hubbub.transports._safe import MAX_HEADER, due_at, text_of
from hubbub.transports.base import DeadLetter

LEVELS = 24  # delay level k holds a message for UNIT * 2**k seconds: up to ~19 days in all
UNIT = 0.1
MAX_PRIORITY = 9
H_ATTEMPTS, H_QUEUE, H_ETA = "hubbub-attempts", "hubbub-queue", "hubbub-eta"
H_TARGET, H_REASON, H_DIED = "hubbub-target", "hubbub-reason", "hubbub-died-at"
H_RETURNS = "x-delivery-count"  # a quorum queue's count of returns, kept by the broker
MAX_TTL_MS = 2**32 - 1
OPTIONS = ("prefix", "connect_timeout", "consumer_timeout", "publish_timeout", "queue_type",
           "delivery_limit")
QUEUE_TYPES = ("classic", "quorum")
_NAME = re.compile(r"[A-Za-z0-9_.:@#,/+-]{1,150}")
_PREFIX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")


def check_prefix(prefix: str) -> str:
    """``prefix``, if it can name queues and exchanges.

    Raises:
        ConfigurationError: it holds other characters than letters, digits, _ and -.
    """
    if not _PREFIX.fullmatch(prefix):
        raise ConfigurationError(f"AMQP prefix {prefix!r} must be letters, digits, _, -")
    return prefix


def main_name(prefix: str, queue: str) -> str:
    """The AMQP queue that holds ``queue``'s ready messages.

    Raises:
        ConfigurationError: ``queue`` has characters or a length AMQP names cannot hold.
    """
    if not _NAME.fullmatch(queue):
        raise ConfigurationError(
            f"queue name {queue!r} does not suit AMQP: use 1-150 of A-Za-z0-9-_.:@#,/+"
        )
    return f"{prefix}.{queue}"


def dead_name(prefix: str, queue: str) -> str:
    """The AMQP queue that holds ``queue``'s dead letters, declared with their retention
    (``x-message-ttl``) and cap (``x-max-length``, ``x-overflow: drop-head``).

    Version 2 of the name: RabbitMQ refuses to declare an existing queue with other
    arguments, and hubbub up to 0.2 declared ``legacy_dead_name`` without any. A new name
    works on a fresh and an existing broker alike, with no policy to install.
    """
    return f"{prefix}:dead2.{queue}"


def legacy_dead_name(prefix: str, queue: str) -> str:
    """Where hubbub up to 0.2 kept ``queue``'s dead letters, with no retention or cap; read
    with the new queue, and emptied into it when the queue is next declared."""
    return f"{prefix}:dead.{queue}"


def quorum(queue_type: str) -> dict[str, Any]:
    """The argument that makes a queue a quorum queue (replicated by Raft over the cluster's
    nodes), or none for a classic one."""
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else {}


def main_arguments(queue_type: str, delivery_limit: int | None) -> dict[str, Any]:
    """The arguments of a queue's main AMQP queue.

    Classic: ``x-max-priority``. Quorum (RabbitMQ 3.x has no priorities on them): the type,
    and ``x-delivery-limit`` when set: the broker dead-letters a message returned more often
    than that (its ``x-delivery-count``, which is also hubbub's count of attempts there),
    whatever the consumers do, at least once (``x-dead-letter-strategy``, which needs
    ``x-overflow: reject-publish``).
    """
    if queue_type != "quorum":
        return {"x-max-priority": MAX_PRIORITY}
    args: dict[str, Any] = quorum(queue_type)
    if delivery_limit is not None:
        args.update({"x-delivery-limit": delivery_limit, "x-overflow": "reject-publish",
                     "x-dead-letter-strategy": "at-least-once"})
    return args


def dead_arguments(ttl: float, limit: int) -> dict[str, Any]:
    """The arguments of a dead-letter queue: RabbitMQ drops what is older or past the cap.

    RabbitMQ holds a message TTL of at most 2**32 - 1 ms (about 49 days); a longer
    retention is cut to that.
    """
    return {"x-message-ttl": min(max(1, round(ttl * 1000)), MAX_TTL_MS),
            "x-max-length": limit, "x-overflow": "drop-head"}


def level_names(prefix: str, queue: str) -> list[str]:
    """The delay cascade's level queues of ``queue``, level 0 first."""
    return [f"{prefix}:delay{k:02d}.{queue}" for k in range(LEVELS)]


def queue_names(prefix: str, queue: str) -> list[str]:
    """Every AMQP queue hubbub declares for ``queue``: itself, dead letters, delay levels,
    and the dead letters' queue of hubbub up to 0.2."""
    return [f"{prefix}.{queue}", dead_name(prefix, queue), *level_names(prefix, queue),
            legacy_dead_name(prefix, queue)]


def exchange_names(prefix: str) -> list[str]:
    """The delay cascade's headers exchanges, shared by every queue under ``prefix``."""
    return [f"{prefix}:delay{k:02d}" for k in range(LEVELS)]


def directory_name(prefix: str) -> str:
    """The queue whose messages name every hubbub queue under ``prefix``."""
    return f"{prefix}:queues"


def parse_urls(url: str) -> tuple[list[str], dict[str, str]]:
    """The broker URLs of ``url`` (several for a cluster, split on ';' or ',') without
    hubbub's options, and those options.

    Raises:
        ConfigurationError: a part is not an amqp:// or amqps:// URL.
    """
    urls: list[str] = []
    options: dict[str, str] = {}
    for part in re.split(r"[;,]\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)", url.strip()):
        pieces = urlsplit(part.strip())
        if pieces.scheme not in ("amqp", "amqps") or not pieces.hostname:
            raise ConfigurationError(f"{redact(part)!r} is not an amqp:// or amqps:// URL")
        query = parse_qsl(pieces.query, keep_blank_values=True)
        options.update((k, v) for k, v in query if k in OPTIONS)
        rest = urlencode([(k, v) for k, v in query if k not in OPTIONS])
        urls.append(urlunsplit(pieces._replace(query=rest)))
    return urls, options


def short_id(ident: str | None) -> str | None:
    """``ident`` as an AMQP message id can hold it: UTF-8, at most 255 bytes."""
    if ident is None:
        return None
    return clean_text(ident).encode()[:255].decode("utf-8", "ignore")


def build_message(queue: str, body: bytes, ident: str | None, priority: int, attempts: int,
                  **headers: Any) -> aio_pika.Message:
    """A persistent message for ``queue`` carrying the deliveries counted before it.

    Every text header is cut to ``MAX_HEADER`` characters: RabbitMQ closes the connection
    on headers larger than a frame, which would fail every later write too.
    """
    return aio_pika.Message(
        body, message_id=short_id(ident), delivery_mode=DeliveryMode.PERSISTENT,
        priority=min(max(priority, 0), MAX_PRIORITY),
        headers={H_QUEUE: queue, H_ATTEMPTS: attempts,
                 **{k: cap(v, MAX_HEADER) if isinstance(v, str) else v
                    for k, v in headers.items()}},
    )


def dead_letter_of(queue: str, m: AbstractIncomingMessage) -> DeadLetter:
    """The dead letter a message of ``<prefix>:dead.<queue>`` records.

    One the broker dead-lettered itself (a quorum queue's ``x-delivery-limit``) has no
    hubbub headers: its reason and time come from RabbitMQ's ``x-death``.
    """
    headers = m.headers or {}
    reason, died = text_of(headers.get(H_REASON)), seconds(headers.get(H_DIED))
    deaths = headers.get("x-death")
    if died is None and isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        death = deaths[0]
        at = death.get("time")
        died = at.timestamp() if isinstance(at, datetime.datetime) else seconds(at)
        reason = reason or f"RabbitMQ dead-lettered it: {text_of(death.get('reason'))}"
    return DeadLetter(text_of(m.message_id), queue, m.body, reason, died or 0.0)


def seconds(raw: object) -> float | None:
    """A finite number from a header (epoch seconds); None when it is not one."""
    try:
        value = float(text_of(raw, "nan"))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def delay_units(eta: float | None, now: float) -> int:
    """Whole ``UNIT``s until ``eta`` (rounded up, at most what the cascade holds); 0 for now."""
    at = due_at(eta, now)
    if at is None:
        return 0
    units = math.ceil(round((at - now) / UNIT, 6))
    return max(0, min(units, (1 << LEVELS) - 1))


def delay_route(prefix: str, queue: str, units: int, eta: float) -> tuple[str, dict[str, str]]:
    """The exchange a message delayed by ``units`` (> 0) enters, and the headers it carries."""
    headers = {f"hubbub-d{k}": str(units >> k & 1) for k in range(LEVELS)}
    headers.update({H_TARGET: queue, H_ETA: repr(eta)})
    return exchange_names(prefix)[units.bit_length() - 1], headers


async def declare_levels(pub: AbstractChannel, prefix: str) -> None:
    """The cascade's exchanges, each bound to the one above for messages whose bit is 0."""
    exchanges = [await pub.declare_exchange(n, ExchangeType.HEADERS, durable=True)
                 for n in exchange_names(prefix)]
    for k in range(1, LEVELS):  # bit k clear: fall through to the level below
        await exchanges[k - 1].bind(exchanges[k],
                                    arguments={"x-match": "all", f"hubbub-d{k}": "0"})


async def declare_cascade(pub: AbstractChannel, prefix: str, queue: str) -> None:
    """``queue``'s level queues, bound to the exchanges ``declare_levels`` made, and the
    binding that delivers from level 0 into ``queue`` itself (which must exist)."""
    levels = exchange_names(prefix)
    main, names = main_name(prefix, queue), level_names(prefix, queue)
    for k, name in enumerate(names):
        args: dict[str, Any] = {"x-message-ttl": round(UNIT * 1000) << k,
                                "x-dead-letter-exchange": levels[k - 1] if k else ""}
        if k == 0:
            args["x-dead-letter-routing-key"] = main
        level = await pub.declare_queue(name, durable=True, arguments=args)
        await level.bind(levels[k], arguments={"x-match": "all", f"hubbub-d{k}": "1",
                                               H_TARGET: queue})
    target = await pub.get_queue(main, ensure=False)
    await target.bind(levels[0], arguments={"x-match": "all", "hubbub-d0": "0",
                                            H_TARGET: queue})


@contextlib.asynccontextmanager
async def browse(conn: AbstractConnection, name: str
                 ) -> AsyncIterator[list[AbstractIncomingMessage]]:
    """Every message of queue ``name``, taken unacked on a channel of its own; what is not
    acked goes back in place when the block ends (the channel closes)."""
    channel = await conn.channel(publisher_confirms=False)
    try:
        got: list[AbstractIncomingMessage] = []
        with contextlib.suppress(ChannelNotFoundEntity):
            queue = await channel.declare_queue(name, passive=True)
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                got.append(message)
        yield got
    finally:
        if not channel.is_closed:
            await channel.close()


async def ready_counts(conn: AbstractConnection, names: Sequence[str]) -> list[int | None]:
    """Ready messages in each queue (passive declares); None where it does not exist."""
    channel, out = await conn.channel(publisher_confirms=False), []
    try:
        for name in names:
            if channel.is_closed:  # a 404 closes the channel
                channel = await conn.channel(publisher_confirms=False)
            try:
                result = (await channel.declare_queue(name, passive=True)).declaration_result
                out.append(result.message_count)
            except ChannelNotFoundEntity:
                out.append(None)
    finally:
        if not channel.is_closed:
            await channel.close()
    return out
