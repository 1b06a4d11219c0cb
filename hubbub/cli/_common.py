"""What every ``hubbub`` command shares: consoles, error handling, finding the hub."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import unicodedata
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.text import Text

from hubbub._loader import load_hub
from hubbub._redact import redact
from hubbub.errors import HubbubError
from hubbub.hub import Hub

T = TypeVar("T")
console = Console()
errors = Console(stderr=True)

APP_HELP = "The app as module:attribute, e.g. shop.tasks:hub (attribute defaults to 'hub')."
BROKER_HELP = ("Broker URL, e.g. redis://localhost:6379/0 (default: $HUBBUB_BROKER, else "
               "sqlite:///hubbub.db here). Give --app or --broker, not both.")
LOGLEVEL_HELP = "Log level; debug also shows the broker drivers' own connection logs."

# Drivers that log every failed connection attempt at ERROR before hubbub reports the failure
# in one line of its own; their lines would only bury it.
DRIVER_LOGGERS = ("aiormq", "aio_pika")

PREVIEW = 200  # characters of broker data shown in one cell


def quiet_drivers(loglevel: str = "info") -> None:
    """Silence the broker drivers' connection noise, unless ``loglevel`` is debug."""
    level = logging.NOTSET if loglevel.lower() == "debug" else logging.CRITICAL
    for name in DRIVER_LOGGERS:
        logging.getLogger(name).setLevel(level)


def plain(value: object, limit: int = PREVIEW) -> Text:
    """``value`` as inert text for a table cell or a line: never parsed as rich markup, control
    characters (terminal escapes, newlines) shown as ``\\xNN``, cut to ``limit`` characters.

    Everything a broker returns goes through here: it may have been written by anyone.
    """
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return Text("".join(_escape(c) if unicodedata.category(c) in ("Cc", "Cf", "Cs") else c
                        for c in text))


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def fail(message: str) -> None:
    """Print ``error: message`` to stderr as one line (secrets masked, no markup)."""
    line = " ".join(redact(message).split())  # one line, whatever the message holds
    errors.print(Text.assemble(("error:", "red"), " ", plain(line, limit=2000)),
                 soft_wrap=True, highlight=False)


def friendly(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn hubbub errors into one red line and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except HubbubError as exc:
            fail(str(exc))
            sys.exit(1)

    return wrapper


def open_hub(app: str | None, broker: str | None) -> Hub:
    if app:
        hub = load_hub(app)
        if broker:
            raise click.UsageError("give --app or --broker, not both")
        return hub
    return Hub(overrides={"broker": broker})


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)
