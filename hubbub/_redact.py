"""One sanitizer for secrets: every URL shown in logs, banners, errors and tables goes
through ``redact``."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^/\s]*)@",
                       re.IGNORECASE)
_QUERY_SECRET = re.compile(r"(?P<key>[?&](?:password|passwd|pwd|token|secret|key)=)[^&\s]*",
                           re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with passwords in URLs (``user:pw@``, ``?password=``) replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}***", text)
