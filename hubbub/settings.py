"""Settings: one frozen dataclass. This is the only module that reads ``HUBBUB_*``.

Precedence is CLI > code > environment > defaults: the CLI passes its options last, what the
code passed to ``Hub(...)`` wins over ``HUBBUB_*`` variables, the environment fills what the
code left unset, and defaults fill the rest. Each setting remembers where it came from
(:meth:`Settings.source`), for the worker's banner.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeAlias
from urllib.parse import quote, urlsplit

from hubbub._plugins import check_url
from hubbub._redact import redact
from hubbub._suggest import did_you_mean
from hubbub.errors import ConfigurationError
from hubbub.message import DEFAULT_MAX_SIZE
from hubbub.results import SCHEMES as RESULT_SCHEMES

DEFAULT_BROKER = "sqlite:///hubbub.db"
DEFAULT_FILE = "hubbub.db"  # the default broker's file, in the directory a Hub anchors it to

Source: TypeAlias = Literal["default", "environment", "code", "CLI"]


def sqlite_url(directory: Path) -> str:
    """``sqlite:////abs/dir/hubbub.db``: the default broker file in ``directory``, absolute, so
    that it does not depend on the working directory of whoever opens it."""
    return "sqlite:///" + quote(str(directory.resolve() / DEFAULT_FILE), safe="/")


def seconds(value: float | timedelta | str, name: str) -> float:
    """A duration in float seconds from a number, a timedelta or a numeric string.

    Raises:
        ConfigurationError: not a non-negative number.
    """
    if isinstance(value, timedelta):
        value = value.total_seconds()
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}") from None
    if not math.isfinite(result):
        raise ConfigurationError(f"{name} must be a finite number of seconds, not {value!r}")
    if result < 0:
        raise ConfigurationError(f"{name} must not be negative, got {result}")
    return result


@dataclass(frozen=True, slots=True)
class Limits:
    """Size and count limits.

    Attributes:
        max_message_size: bytes an encoded message may have, on send and on receive.
        max_deliveries: times the broker may hand one message out without an ack before it
            is dead-lettered as poison (a task that kills its worker every time).
        dead_letter_ttl: seconds a dead letter is kept (a float or a timedelta; default 7
            days). The broker drops older ones.
        max_dead_letters: dead letters kept per queue; past it the oldest are dropped, with
            a log line saying how many.
    """

    max_message_size: int = DEFAULT_MAX_SIZE
    max_deliveries: int = 5
    dead_letter_ttl: float = 7 * 86400.0
    max_dead_letters: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_message_size", "max_deliveries", "max_dead_letters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"limits.{name} must be a whole number of at least 1, "
                                         f"not {value!r}")
        ttl = seconds(self.dead_letter_ttl, "limits.dead_letter_ttl")
        if ttl <= 0:
            raise ConfigurationError("limits.dead_letter_ttl must be more than 0 seconds")
        object.__setattr__(self, "dead_letter_ttl", ttl)  # a timedelta becomes float seconds


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a hub is configured with. Build it with :func:`resolve`."""

    broker: str = DEFAULT_BROKER
    results: str | None = None
    lease: float = 30.0
    serializer: str = "json"
    accept: frozenset[str] = frozenset({"json"})
    result_ttl: float = 86400.0
    default_queue: str = "default"
    limits: Limits = field(default_factory=Limits)
    # key id -> secret, the signing key first; never shown in repr or logs
    signing_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # Dead letters hold what could not run; a task that ran and failed for good is a FAILURE
    # result only, unless this asks for both (a task that keeps no result is dead-lettered
    # either way, or nothing would keep its failure).
    dead_letter_failures: bool = False
    # Publish events on the plane: task-sent from producers, every event from workers.
    events: bool = False
    # Write the task history (the dashboard's search and task pages) with each result.
    history: bool = True
    # The Celery bridge (docs/celery.md): Celery's broker, for --celery-queue and
    # send_task(protocol="celery") (default: the hub's broker when it is Redis or RabbitMQ),
    # and Celery's Redis result backend, where bridged tasks' results are also written.
    celery_broker: str | None = None
    celery_results: str | None = None
    # setting (field name, or limits.x) -> where it came from, for those not defaulted
    sources: tuple[tuple[str, Source], ...] = field(default=(), repr=False, compare=False)

    def source(self, name: str) -> Source:
        """Where setting ``name`` (a field, or ``limits.x``) came from: ``"CLI"``,
        ``"code"``, ``"environment"`` or ``"default"``."""
        return dict(self.sources).get(name, "default")

    def __repr__(self) -> str:
        # The URLs may hold passwords (user:pw@, ?password=): shown masked, as everywhere.
        shown = []
        for f in fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name in _URL_FIELDS and isinstance(value, str):
                value = redact(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"


_URL_FIELDS = frozenset({"broker", "results", "celery_broker", "celery_results"})


_PARSERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    # environment variable -> (settings field, parser)
    "HUBBUB_BROKER": ("broker", str),
    "HUBBUB_RESULTS": ("results", str),
    "HUBBUB_LEASE": ("lease", lambda v: seconds(v, "HUBBUB_LEASE")),
    "HUBBUB_SERIALIZER": ("serializer", str),
    "HUBBUB_ACCEPT": ("accept", lambda v: frozenset(x.strip() for x in v.split(",") if x.strip())),
    "HUBBUB_RESULT_TTL": ("result_ttl", lambda v: seconds(v, "HUBBUB_RESULT_TTL")),
    "HUBBUB_DEFAULT_QUEUE": ("default_queue", str),
    "HUBBUB_MAX_MESSAGE_SIZE": ("limits.max_message_size", int),
    "HUBBUB_MAX_DELIVERIES": ("limits.max_deliveries", int),
    "HUBBUB_DEAD_LETTER_TTL": ("limits.dead_letter_ttl",
                               lambda v: seconds(v, "HUBBUB_DEAD_LETTER_TTL")),
    "HUBBUB_MAX_DEAD_LETTERS": ("limits.max_dead_letters", int),
    "HUBBUB_SIGNING_KEYS": ("signing_keys", lambda v: _key_pairs(v)),
    "HUBBUB_DEAD_LETTER_FAILURES": ("dead_letter_failures", lambda v: _flag(v)),
    "HUBBUB_EVENTS": ("events", lambda v: _flag(v)),
    "HUBBUB_HISTORY": ("history", lambda v: _flag(v)),
    "HUBBUB_CELERY_BROKER": ("celery_broker", str),
    "HUBBUB_CELERY_RESULTS": ("celery_results", str),
}


# -- dashboard --: the dashboard's credentials, read by hubbub.dashboard.config (never hub
# settings, and never shown): a hub started beside them must not call them unknown.
DASHBOARD_VARIABLES = frozenset({"HUBBUB_DASHBOARD_TOKEN", "HUBBUB_DASHBOARD_USER",
                                 "HUBBUB_DASHBOARD_PASSWORD", "HUBBUB_DASHBOARD_SECRET"})


# -- the worker's event loop: a worker option (``hubbub worker --loop``, ``run_worker(loop=)``),
# not a hub setting (a Hub has no say in how a worker process runs), that a variable may also
# set: CLI > code > environment > "auto".
LOOPS = ("auto", "asyncio", "uvloop")
LOOP_VARIABLE = "HUBBUB_LOOP"


def loop_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """The event loop ``$HUBBUB_LOOP`` asks for (one of ``LOOPS``), or None when unset.

    Raises:
        ConfigurationError: it names no loop hubbub knows.
    """
    raw = (os.environ if environ is None else environ).get(LOOP_VARIABLE)
    if raw is None or not raw.strip():
        return None
    name = raw.strip().lower()
    if name not in LOOPS:
        raise ConfigurationError(f"{LOOP_VARIABLE}={raw!r} is not valid: write one of "
                                 f"{', '.join(LOOPS)}{did_you_mean(name, LOOPS)}")
    return name


def _flag(value: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off``, any case."""
    word = value.strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off"}:
        return False
    raise ValueError("write 1/true/yes/on or 0/false/no/off")


def _key_pairs(value: str) -> tuple[tuple[str, str], ...]:
    """``kid:secret,kid2:secret2`` -> pairs, in order (the first signs)."""
    pairs = []
    for item in value.split(","):
        kid, sep, secret = item.strip().partition(":")
        if not sep or not kid or not secret:
            raise ValueError("write key-id:secret pairs separated by commas")
        pairs.append((kid, secret))
    return tuple(pairs)


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith("HUBBUB_") or key in DASHBOARD_VARIABLES or key == LOOP_VARIABLE:
            continue
        if key not in _PARSERS:
            known = [*_PARSERS, LOOP_VARIABLE]
            tip = did_you_mean(key, known) or f"; known: {', '.join(known)}"
            raise ConfigurationError(f"unknown setting {key}{tip}")
        name, parse = _PARSERS[key]
        try:
            found[name] = parse(raw)
        except (ValueError, ConfigurationError) as exc:
            shown = "***" if key == "HUBBUB_SIGNING_KEYS" else repr(redact(raw))
            raise ConfigurationError(f"{key}={shown} is not valid: {exc}") from None
    return found


def default_results(broker: str) -> str | None:
    """Where results go when not told: next to the broker when it can keep them.

    A broker can keep them when its scheme is also a result store's, as registered in
    ``hubbub.results.SCHEMES``: a new result store follows its broker with no change here.
    """
    scheme = urlsplit(broker).scheme
    return broker if scheme in RESULT_SCHEMES else None


def _spread_limits(layer: Mapping[str, Any]) -> dict[str, Any]:
    """``limits=Limits(...)`` as ``limits.x`` keys, for the fields it does not leave at their
    default: only those were set."""
    spread = {k: v for k, v in layer.items() if k != "limits"}
    given = layer.get("limits")
    if given is None:
        return spread
    if not isinstance(given, Limits):
        raise ConfigurationError(f"limits must be a hubbub.Limits(...), not {given!r}")
    default = Limits()
    for f in fields(Limits):
        value = getattr(given, f.name)
        if value != getattr(default, f.name):
            spread.setdefault(f"limits.{f.name}", value)
    return spread


def environment_variable(name: str) -> str | None:
    """The ``HUBBUB_*`` variable that sets ``name`` (a field, or ``limits.x``)."""
    return next((env for env, (field_name, _) in _PARSERS.items() if field_name == name), None)


def resolve(
    code: Mapping[str, Any], cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None, defaults: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from the defaults, then the environment, then the code, then the CLI (later
    wins).

    Keys are field names, with ``limits.x`` for grouped ones; ``None`` values are ignored. A
    ``Limits`` object given by the code sets the fields it does not leave at their default,
    so the environment still fills the others.

    Args:
        code: what the code passed to ``Hub(...)``.
        cli: the command line's options.
        environ: the environment (default ``os.environ``).
        defaults: defaults that depend on the caller, e.g. the anchored SQLite file.

    Raises:
        ConfigurationError: an unknown or invalid setting, with a suggestion.
    """
    merged: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    env = _from_environment(os.environ if environ is None else environ)
    layers: tuple[tuple[Source, Mapping[str, Any]], ...] = (
        ("default", defaults or {}), ("environment", env), ("code", _spread_limits(code)),
        ("CLI", _spread_limits(cli or {})))
    for origin, layer in layers:
        for key, value in layer.items():
            if value is not None:
                merged[key] = value
                sources[key] = origin
    known = {f.name for f in fields(Settings)} | {f"limits.{f.name}" for f in fields(Limits)}
    for key in merged:
        if key not in known:
            raise ConfigurationError(f"unknown setting {key!r}{did_you_mean(key, known)}")
    limit_keys = [k for k in list(merged) if k.startswith("limits.")]
    try:
        limits = replace(Limits(), **{k.split(".", 1)[1]: merged.pop(k) for k in limit_keys})
    except ConfigurationError as exc:
        env_names = [e for e, (f, _) in _PARSERS.items()
                     if f in limit_keys and sources[f] == "environment"]
        raise ConfigurationError(f"{exc} (from {', '.join(env_names) or 'code'})") from None
    if "lease" in merged:
        merged["lease"] = seconds(merged["lease"], "lease")
    if "result_ttl" in merged:
        merged["result_ttl"] = seconds(merged["result_ttl"], "result_ttl")
    settings = Settings(limits=limits, sources=tuple(
        (k, v) for k, v in sorted(sources.items()) if v != "default"), **merged)
    check_url(settings.broker, "broker")
    if settings.results not in (None, "", "none"):
        check_url(str(settings.results), "result store")
    if settings.lease <= 0:
        raise ConfigurationError("lease must be more than 0 seconds")
    if "results" not in merged:
        settings = replace(settings, results=default_results(settings.broker))
    elif settings.results in {"", "none"}:
        settings = replace(settings, results=None)
    accept = settings.accept | {settings.serializer}
    return replace(settings, accept=frozenset(accept))
