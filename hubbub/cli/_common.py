"""What every ``hubbub`` command shares: consoles, error handling, finding the hub."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from hubbub._loader import load_hub
from hubbub._redact import redact
from hubbub.errors import HubbubError
from hubbub.hub import Hub
from hubbub.settings import Limits, Settings, environment_variable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

T = TypeVar("T")


def __getattr__(name: str) -> Console:
    """``console`` (stdout) and ``errors`` (stderr), made on first use: rich is imported only
    by commands that print with it, never by ``hubbub worker`` (issue #18: idle memory)."""
    if name not in ("console", "errors"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _console(name)


def _console(name: str) -> Console:
    made: Console | None = globals().get(name)
    if made is None:
        from rich.console import Console

        made = globals()[name] = Console(stderr=name == "errors")
    return made

APP_HELP = "The app as module:attribute, e.g. shop.tasks:hub (attribute defaults to 'hub')."
BROKER_HELP = ("Broker URL, e.g. redis://localhost:6379/0 (default: the app's broker; without "
               "--app, $HUBBUB_BROKER, else hubbub.db in the working directory). Give --app or "
               "--broker, not both.")
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
    import unicodedata  # here, as rich: a worker prints no table (issue #18)

    from rich.text import Text

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
    from rich.text import Text

    line = " ".join(redact(message).split())  # one line, whatever the message holds
    _console("errors").print(Text.assemble(("error:", "red"), " ", plain(line, limit=2000)),
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


def settings_lines(hub: Hub, cli: Mapping[str, object] | None = None) -> list[str]:
    """The banner's account of the configuration: the broker (with the absolute path of an
    SQLite file) and every setting that is not a default, each with where it came from.

    Args:
        hub: the loaded hub.
        cli: options given on the command line that the hub's settings do not hold (the
            worker's ``--lease``), by setting name.
    """
    settings = hub.settings
    lines = [f"broker {redact(settings.broker)}{_file_of(settings.broker)} "
             f"({_origin(hub, 'broker')})"]
    if settings.results != settings.broker:
        results = "none" if settings.results is None else redact(settings.results)
        lines.append(f"results {results}{_file_of(settings.results)} "
                     f"({_origin(hub, 'results')})")
    shown = {"broker", "results", "sources", "limits"}
    names = [f.name for f in fields(Settings) if f.name not in shown]
    names += [f"limits.{f.name}" for f in fields(Limits)]
    for name in names:
        given = (cli or {}).get(name)
        if given is not None:
            lines.append(f"{name} {given} (from the CLI)")
        elif settings.source(name) != "default":
            lines.append(f"{name} {_shown(settings, name)} ({_origin(hub, name)})")
    return lines


def _shown(settings: Settings, name: str) -> str:
    if name == "signing_keys":  # key ids only, never a secret
        return ", ".join(kid for kid, _ in settings.signing_keys)
    if name in ("celery_broker", "celery_results"):  # URLs: passwords masked
        return redact(str(getattr(settings, name)))
    value = getattr(settings.limits if name.startswith("limits.") else settings,
                    name.removeprefix("limits."))
    if isinstance(value, frozenset):
        return ",".join(sorted(value))
    return str(value)


def _origin(hub: Hub, name: str) -> str:
    source = hub.settings.source(name)
    if source == "environment":
        return f"from ${environment_variable(name)}"
    if source != "default":
        return f"from {source if source == 'CLI' else 'the code'}"
    if name == "results":
        return "default: next to the broker"
    if name == "broker":
        if hub.anchor is None:
            return "default: in the working directory"
        return f"default: next to {hub.anchor}, the module that made the Hub"
    return "default"


def _file_of(url: str | None) -> str:
    """`` = /abs/path/hubbub.db`` for an SQLite URL: the file, absolute."""
    if url is None or not url.startswith("sqlite:"):
        return ""
    # Here, not at the top: a worker on another broker never loads sqlite3 (issue #18).
    from hubbub._sqlite import sqlite_path

    try:
        return f" = {Path(sqlite_path(url)).resolve()}"
    except HubbubError:
        return ""


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)
