"""What the dashboard is told: where it listens, who may see it, whether it may act.

Credentials come from the environment only, never from the command line (where ``ps``
would show them): ``HUBBUB_DASHBOARD_TOKEN``, or ``HUBBUB_DASHBOARD_USER`` with
``HUBBUB_DASHBOARD_PASSWORD``; ``HUBBUB_DASHBOARD_SECRET`` signs the session cookies (a
random key per process when unset: sessions then end with the process).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from hubbub.errors import ConfigurationError
from hubbub.results.base import HISTORY_TTL

__all__ = ["DEFAULT_BIND", "DashboardConfig", "parse_bind"]

DEFAULT_BIND = "127.0.0.1:5555"


def parse_bind(bind: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) as a pair.

    Raises:
        ConfigurationError: the text is not ``host:port`` with a port from 1 to 65535.
    """
    host, sep, port = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"--bind {bind!r} is not host:port, e.g. {DEFAULT_BIND}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@dataclass(frozen=True)
class DashboardConfig:
    """How one dashboard runs.

    Attributes:
        host, port: where it listens.
        read_only: hide and refuse every action.
        token: a bearer token that logs in (header ``Authorization: Bearer ...`` or the
            login form).
        user, password: basic-auth credentials (header or login form).
        secret: the key that signs session cookies.
        retention: seconds of task history the dashboard keeps (older rows are pruned).
        secure_cookies: mark cookies ``Secure`` (browsers then send them over HTTPS only; on
            loopback plain HTTP they are left unmarked so that a local login works).
    """

    host: str = "127.0.0.1"
    port: int = 5555
    read_only: bool = False
    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    secret: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)
    retention: float = HISTORY_TTL
    secure_cookies: bool = False

    @property
    def auth_required(self) -> bool:
        return self.token is not None or self.user is not None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, *,
                         bind: str = DEFAULT_BIND, read_only: bool = False,
                         retention: float = HISTORY_TTL) -> DashboardConfig:
        """The configuration for ``bind``, with credentials from ``environ``.

        Raises:
            ConfigurationError: a bad bind, a user without a password (or the reverse), a
                retention that is not positive, or a non-loopback bind without credentials.
        """
        env = os.environ if environ is None else environ
        host, port = parse_bind(bind)
        token = env.get("HUBBUB_DASHBOARD_TOKEN") or None
        user = env.get("HUBBUB_DASHBOARD_USER") or None
        password = env.get("HUBBUB_DASHBOARD_PASSWORD") or None
        if (user is None) != (password is None):
            raise ConfigurationError("set both HUBBUB_DASHBOARD_USER and "
                                     "HUBBUB_DASHBOARD_PASSWORD, or neither")
        if retention <= 0:
            raise ConfigurationError("--retention must be more than 0 seconds")
        config = cls(host, port, read_only, token, user, password,
                     env.get("HUBBUB_DASHBOARD_SECRET") or secrets.token_hex(32), retention,
                     secure_cookies=not is_loopback(host))
        config.check_exposure()
        return config

    def check_exposure(self) -> None:
        """Refuse to listen beyond this machine without authentication.

        Raises:
            ConfigurationError: the host is not loopback and no credentials are set.
        """
        if not is_loopback(self.host) and not self.auth_required:
            raise ConfigurationError(
                f"refusing to serve the dashboard on {self.host} without authentication: "
                "set HUBBUB_DASHBOARD_TOKEN (or HUBBUB_DASHBOARD_USER and "
                "HUBBUB_DASHBOARD_PASSWORD), or bind 127.0.0.1")
