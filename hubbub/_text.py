"""Text any store keeps: made encodable, and cut to a cap with a note of how much was cut.

Below both transports and result stores, which share these: a dead-letter reason and a
stored error message obey the same cap, and neither may fail on a lone surrogate.
"""

from __future__ import annotations

MAX_REASON = 4096  # characters of a dead-letter reason or error text any store keeps
_MARK = "... [cut: {} more characters]"


def clean_text(text: str) -> str:
    """``text`` that encodes as UTF-8: lone surrogates become ``\\udcff`` escapes."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def cap(text: str, limit: int = MAX_REASON) -> str:
    """``text`` made encodable and cut to at most ``limit`` characters, saying it was cut."""
    text = clean_text(text)
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(_MARK.format(len(text))))
    return text[:keep] + _MARK.format(len(text) - keep)
