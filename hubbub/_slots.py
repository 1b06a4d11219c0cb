"""Building a frozen, slotted dataclass without its ``__init__``, for the worker's hot path.

A frozen dataclass's ``__init__`` sets each field with ``object.__setattr__``, about twice the
cost of calling the slot's descriptor. The few objects made for every task (a received
envelope, its job, the task's context, its admission, a success) are built through their
slots' setters instead, found once per class by :func:`slot_setters`; each builder is pinned
to its class's fields by a test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

Setter = Callable[[Any, Any], None]


def slot_setters(cls: type, names: Iterable[str] | None = None) -> tuple[Setter, ...]:
    """The setter of each slot of ``cls``: of ``names`` in their order, else of every field
    in declaration order (unpack them by name, so that a field added fails at import)."""
    chosen = [f.name for f in fields(cls)] if names is None else list(names)
    return tuple(getattr(cls, name).__set__ for name in chosen)
