"""Plug-in loading: the class registered for a URL's scheme, after checking the URL's shape.

Transports and result stores register ``scheme -> (module, class, extra)``; a malformed URL
or an unknown scheme fails here, with one line that names the fix, before any driver sees it.
"""

from __future__ import annotations

import importlib
import re
from typing import Any
from urllib.parse import SplitResult, urlsplit

from hubbub._redact import redact
from hubbub._suggest import did_you_mean
from hubbub.errors import ConfigurationError

Registry = dict[str, tuple[str, str, str | None]]

# Some brokers take a list of URLs for a cluster, split on ';' or ',' before the next scheme.
_NEXT_URL = re.compile(r"[;,]\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def check_url(url: str, kind: str) -> SplitResult:
    """The parts of ``url`` (the first one of a list), if every URL in it is well formed.

    Args:
        url: one URL, or several separated by ';' or ','.
        kind: what the URL is for, as the message names it ("transport", "result backend").

    Returns:
        ``urlsplit`` of the first URL.

    Raises:
        ConfigurationError: no ``scheme://``, an unclosed '[' of an IPv6 address, or a port
            that is not a number from 1 to 65535. The message shows the URL with its secrets
            masked.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"{kind} URL {redact(str(url))!r} has no scheme; write it "
                                 "like redis://localhost:6379/0 or sqlite:///hubbub.db")
    first: SplitResult | None = None
    for part in _NEXT_URL.split(url.strip()):
        try:
            parts = urlsplit(part)
            # A list of hosts (redis+cluster://a:1,b:2) is read, and checked, by its driver.
            port = None if "," in parts.netloc else parts.port
        except ValueError as exc:
            raise ConfigurationError(
                f"malformed {kind} URL {redact(part)!r}: {_why(exc)}"
            ) from None
        if port == 0:
            raise ConfigurationError(
                f"malformed {kind} URL {redact(part)!r}: the port must be 1 to 65535")
        first = first or parts
    assert first is not None  # split() returns at least one part
    return first


def _why(exc: ValueError) -> str:
    text = str(exc)
    if "IPv6" in text:
        return "an IPv6 address needs its closing ']', e.g. redis://[::1]:6379/0"
    if "Port" in text or "port" in text:
        return "the port must be a number from 1 to 65535"
    return text


def load_plugin(schemes: Registry, url: str, kind: str) -> type[Any]:
    """The class registered for ``url``'s scheme in ``schemes``.

    Raises:
        ConfigurationError: a malformed URL, an unknown scheme, or the scheme's extra is not
            installed.
    """
    scheme = check_url(url, kind).scheme.lower()
    if scheme not in schemes:
        known = ", ".join(f"{s}://" for s in sorted(schemes))
        raise ConfigurationError(f"unknown {kind} URL scheme {scheme!r}"
                                 f"{did_you_mean(scheme, schemes)}; use one of: {known}")
    module_name, class_name, extra = schemes[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None or module_name in str(exc):
            raise
        raise ConfigurationError(
            f"{kind} {scheme!r} needs an extra: pip install hubbub[{extra}]"
        ) from exc
    cls: type[Any] = getattr(module, class_name)
    return cls


def create(schemes: Registry, url: str, kind: str, **options: Any) -> Any:
    """An instance of the class registered for ``url``'s scheme, built with ``url``.

    Raises:
        ConfigurationError: as :func:`load_plugin`, or the class refused the URL. The
            message never holds the URL's secrets, whatever the class put in it.
    """
    cls = load_plugin(schemes, url, kind)
    try:
        return cls(url, **options)
    except ConfigurationError as exc:
        message = redact(str(exc))
    # Raised outside the handler, so that not even __context__ keeps the original message,
    # the one that may hold the password.
    raise ConfigurationError(message)
