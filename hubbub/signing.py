"""Message signing: HMAC-SHA256 with shared keys, named by key id so keys can rotate.

A signed body is ``b"hubbub-sig1 <key id> <hex mac>\\n" + envelope``. The first key signs;
every key verifies, so a new key is rolled out by adding it second everywhere, then moving
it first, then removing the old one. A worker with keys refuses unsigned and tampered
messages (they go to dead letters with the reason) before anything in them is decoded.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from hubbub.errors import ConfigurationError, MessageError

PREFIX = b"hubbub-sig1 "
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_SECRET = 16  # bytes: a shorter shared secret is too easy to guess


class Signer:
    """Signs with the first key, verifies with any.

    Args:
        keys: key id -> secret (str or bytes), the signing key first.

    Raises:
        ConfigurationError: no keys, a malformed key id, or a secret under 16 bytes.
    """

    def __init__(self, keys: Mapping[str, str | bytes]) -> None:
        if not keys:
            raise ConfigurationError("signing needs at least one key")
        self._keys: dict[str, bytes] = {}
        for kid, secret in keys.items():
            if not _KEY_ID.match(kid):
                raise ConfigurationError(
                    f"signing key id {kid!r} must be 1-64 of A-Z a-z 0-9 _ . -"
                )
            raw = secret.encode() if isinstance(secret, str) else bytes(secret)
            if len(raw) < MIN_SECRET:
                raise ConfigurationError(
                    f"signing key {kid!r} is shorter than {MIN_SECRET} bytes; use a random secret"
                )
            self._keys[kid] = raw
        self.key_id = next(iter(self._keys))

    def __repr__(self) -> str:
        return f"<Signer key ids={list(self._keys)}>"  # never the secrets

    def sign(self, body: bytes) -> bytes:
        mac = hmac.new(self._keys[self.key_id], body, hashlib.sha256).hexdigest()
        return PREFIX + f"{self.key_id} {mac}\n".encode() + body

    def verify(self, data: bytes) -> bytes:
        """The body of a correctly signed message.

        Raises:
            MessageError: unsigned, malformed header, unknown key id, or a wrong signature.
        """
        if not data.startswith(PREFIX):
            raise MessageError("unsigned message refused: this worker accepts signed messages only")
        header, sep, body = data[len(PREFIX):].partition(b"\n")
        kid_raw, _, mac = header.partition(b" ")
        kid = kid_raw.decode("ascii", "replace")
        if not sep or not mac:
            raise MessageError("malformed signature header")
        key = self._keys.get(kid)
        if key is None:
            raise MessageError(f"message signed with unknown key id {kid!r}")
        expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(expected, mac):
            raise MessageError(f"bad signature (key id {kid!r}): tampered, or signed with "
                               "another secret")
        return body


def unverified_body(data: bytes) -> bytes:
    """The envelope part of a possibly signed message, unchecked (for reports only)."""
    if data.startswith(PREFIX):
        return data.partition(b"\n")[2]
    return data
