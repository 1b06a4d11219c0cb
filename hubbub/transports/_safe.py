"""Making what a broker hands back, or what is handed to it, safe to store and to read.

Shared by every transport, so that one malformed entry, a reason of a megabyte or an id
with a lone surrogate is turned into something the broker takes and the worker can settle,
instead of an exception that repeats forever. The text caps that result stores share are in
:mod:`hubbub._text`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from hubbub._text import clean_text
from hubbub.errors import MessageRejectedByBroker

if TYPE_CHECKING:
    from hubbub.transports.base import Outgoing

MAX_HEADER = 1024  # characters of one header value (AMQP caps a frame's headers)
FOREVER = 100 * 365.25 * 86400.0  # the longest delay a broker without its own limit keeps


def text_of(raw: object, fallback: str = "") -> str:
    """A str for a value read from a broker that should have been text (bytes, None, ...)."""
    if raw is None:
        return fallback
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw).decode("utf-8", "backslashreplace")
    return clean_text(raw if isinstance(raw, str) else str(raw))


def bytes_of(raw: object) -> bytes:
    """The bytes of a body read from a broker: text is encoded, nothing is ``b""``."""
    if raw is None:
        return b""
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    return (raw if isinstance(raw, str) else str(raw)).encode("utf-8", "surrogatepass")


def count_of(raw: object, default: int) -> int:
    """A non-negative count from a header or field; ``default`` when it is not one."""
    if isinstance(raw, bool):
        return default
    if isinstance(raw, int):
        value = raw
    else:
        try:
            value = int(text_of(raw).strip())
        except ValueError:
            return default
    return value if 0 <= value < 1 << 31 else default


def due_at(eta: float | None, now: float, longest: float = FOREVER) -> float | None:
    """When a message published at ``now`` with ``eta`` becomes due; None for at once.

    NaN, a past eta and None mean now; infinity or anything past ``now + longest`` (the
    broker's longest delay) means ``now + longest``.
    """
    if eta is None or math.isnan(eta) or eta <= now:
        return None
    return min(eta, now + longest)


def check_queue(item: Outgoing) -> None:
    """Refuse, before anything is sent, an item whose queue no worker could ever name.

    Raises:
        MessageRejectedByBroker: the queue is empty or not encodable text.
    """
    queue = item.queue
    if not isinstance(queue, str) or not queue:
        raise MessageRejectedByBroker(text_of(item.id), text_of(queue),
                                      "a queue name must be a non-empty string")
    if clean_text(queue) != queue:
        raise MessageRejectedByBroker(text_of(item.id), clean_text(queue),
                                      "a queue name must be valid UTF-8 text (no lone surrogates)")
