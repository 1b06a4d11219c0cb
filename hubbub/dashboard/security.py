"""Sessions, login and CSRF for the dashboard.

A session is a signed cookie (HMAC-SHA256 with the configured secret) holding an expiry and
a random CSRF token; it is ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` when served
beyond loopback. Every action is a POST whose form carries that token. Without credentials
configured (loopback only) everyone on this machine is let in, and CSRF still applies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response

from hubbub.dashboard.config import DashboardConfig

__all__ = ["COOKIE", "Session", "Sessions"]

COOKIE = "hubbub_session"
SESSION_TTL = 12 * 3600.0  # seconds a login lasts


@dataclass(frozen=True, slots=True)
class Session:
    """A visitor's signed session: logged in or not, and the CSRF token of their forms."""

    csrf: str
    authenticated: bool
    expires_at: float


class Sessions:
    """Issues and checks session cookies and credentials for one dashboard."""

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self._key = hashlib.sha256(b"hubbub-dashboard:" + config.secret.encode()).digest()

    def _sign(self, payload: bytes) -> str:
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()
        return (base64.urlsafe_b64encode(payload).decode().rstrip("=") + "."
                + base64.urlsafe_b64encode(mac).decode().rstrip("="))

    def _unsign(self, value: str) -> bytes | None:
        data, _, mac = value.partition(".")
        try:
            payload = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
            given = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
        except (binascii.Error, ValueError):
            return None
        good = hmac.new(self._key, payload, hashlib.sha256).digest()
        return payload if hmac.compare_digest(given, good) else None

    def read(self, conn: HTTPConnection) -> Session | None:
        """The valid, unexpired session the request's cookie holds, if any."""
        raw = conn.cookies.get(COOKIE)
        payload = None if raw is None else self._unsign(raw)
        if payload is None:
            return None
        try:
            data = json.loads(payload)
            session = Session(str(data["csrf"]), bool(data["auth"]), float(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires_at > time.time() else None

    def new(self, *, authenticated: bool) -> Session:
        return Session(secrets.token_urlsafe(24), authenticated, time.time() + SESSION_TTL)

    def attach(self, response: Response, session: Session) -> None:
        """Set ``session`` as the response's cookie."""
        payload = json.dumps({"csrf": session.csrf, "auth": session.authenticated,
                              "exp": session.expires_at}).encode()
        response.set_cookie(COOKIE, self._sign(payload), max_age=int(SESSION_TTL),
                            httponly=True, samesite="strict",
                            secure=self.config.secure_cookies, path="/")

    def credentials_ok(self, conn: HTTPConnection) -> bool:
        """Whether the request carries the configured token or basic-auth pair itself
        (``Authorization`` header), for scripts that keep no cookie."""
        header = conn.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return self.check(token=value.strip())
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, ValueError):
                return False
            return self.check(user=user, password=password)
        return False

    def check(self, *, token: str | None = None, user: str | None = None,
              password: str | None = None) -> bool:
        """Whether the given token, or user and password, match (constant-time)."""
        cfg = self.config
        if token and cfg.token is not None:
            return hmac.compare_digest(token.encode(), cfg.token.encode())
        if user is not None and password is not None and cfg.user is not None \
                and cfg.password is not None:
            same_user = hmac.compare_digest(user.encode(), cfg.user.encode())
            same_password = hmac.compare_digest(password.encode(), cfg.password.encode())
            return same_user and same_password
        return False

    def csrf_ok(self, session: Session | None, given: str | None) -> bool:
        """Whether a form's token is the session's."""
        return (session is not None and given is not None
                and hmac.compare_digest(session.csrf.encode(), given.encode()))
