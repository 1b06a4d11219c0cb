"""A task body that runs until something is raised in its thread, for limit and terminate tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def spin_until_interrupted(seen: list[Any],
                           record: Callable[[BaseException], Any] = type) -> None:
    """Sleep in short steps for up to 30 s; what interrupts it goes into ``seen`` (as
    ``record`` gives it: its type by default) and is raised again."""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except BaseException as exc:
        seen.append(record(exc))
        raise
