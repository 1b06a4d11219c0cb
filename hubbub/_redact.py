"""One sanitizer for secrets: every URL shown in logs, banners, errors and tables goes
through ``redact``."""

from __future__ import annotations

import re

# user:password@ in a URL. The password runs to the LAST '@' before the host (urllib and the
# drivers split userinfo there, so "p@ss" is one password), but never past a '/', a space
# or a quote, so the next URL in a sentence keeps its own mask.
# A scheme starts where a run of scheme characters starts (the lookbehind): tried from inside
# a run, the pattern would rescan the rest of it at every character, quadratic in a long
# word (a 64 KB error message took 40 s).
_USERINFO = re.compile(
    r"(?<![a-z0-9+.-])(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s'\"]*):(?P<pw>[^/\s'\"]*)@",
    re.IGNORECASE,
)
# A secret in a query string (?password=, &api_key=, ;token=) or in a repr'd mapping of one
# ('password': '...'), whatever the name ends in: pass, passwd, password, pwd, token,
# secret, key, auth, credential(s), signature.
_SECRET_WORDS = "pass|passwd|password|pwd|token|secret|key|auth|credentials?|sig|signature"  # noqa: S105 (names, not a password)
_SECRET_NAME = rf"[a-z0-9_.-]*(?:{_SECRET_WORDS})"
_QUERY_SECRET = re.compile(rf"(?P<key>[?&;]{_SECRET_NAME}=)[^&;#\s'\"]*", re.IGNORECASE)
_MAPPING_SECRET = re.compile(
    rf"(?P<key>(?P<q>['\"]){_SECRET_NAME}(?P=q)\s*:\s*)(?P<v>['\"])(?:(?!(?P=v)).)*(?P=v)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the secrets of every URL in it replaced by ``***``.

    Masks the password of ``user:password@`` (up to the last ``@`` before the host) and the
    value of every query parameter whose name says it is secret (``password``, ``pass``,
    ``token``, ``secret``, ``api_key``, ...), also when a parsed query is shown as a dict.
    """
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m['key']}***", text)
    return _MAPPING_SECRET.sub(lambda m: f"{m['key']}{m['v']}***{m['v']}", text)
