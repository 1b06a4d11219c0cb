"""What every ``hubbub`` command shares: consoles, error handling, finding the hub."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
from rich.console import Console

from hubbub._loader import load_hub
from hubbub._redact import redact
from hubbub.errors import HubbubError
from hubbub.hub import Hub

T = TypeVar("T")
console = Console()
errors = Console(stderr=True)

APP_HELP = "The app as module:attribute, e.g. shop.tasks:hub (attribute defaults to 'hub')."
BROKER_HELP = "Broker URL (default: $HUBBUB_BROKER, else sqlite:///hubbub.db here)."


def friendly(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn hubbub errors into one red line and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except HubbubError as exc:
            errors.print(f"[red]error:[/red] {redact(str(exc))}", highlight=False)
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
