"""The transport registry names an extra only where a driver has to be installed."""

from __future__ import annotations

from hubbub.transports import SCHEMES


def test_beanstalk_needs_no_extra_so_no_error_can_ask_for_one() -> None:
    assert SCHEMES["beanstalk"][2] is None
