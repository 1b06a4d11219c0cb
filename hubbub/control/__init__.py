"""The control plane: what runs beside the data path so that workers can be watched.

It is the worker registry (:mod:`hubbub.control.registry`): every worker keeps an entry in
the result store, renewed with each heartbeat; ``hubbub workers`` and ``hubbub status`` read
it. And it is remote control: commands and replies (:mod:`hubbub.control.commands`) on the
broker's plane (:mod:`hubbub.control.plane`), answered in each worker by its
:mod:`~hubbub.control.responder` and sent by :class:`~hubbub.control.client.Control`
(``hub.control``, ``hubbub inspect``, ``hubbub control``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hubbub.control.client import Control, Inspector, TaskSummary
    from hubbub.control.commands import ControlTimeout, Reply
    from hubbub.control.registry import LaneEntry, Registry, WorkerInfo

__all__ = ["Control", "ControlTimeout", "Inspector", "LaneEntry", "Registry", "Reply",
           "TaskSummary", "WorkerInfo"]

# Each name loads its module on first access (PEP 562): every worker imports a submodule of
# this package (the registry, the responder, the plane), and importing them must not load
# the client side, which only ``hub.control`` and the CLI use (issue #18).
_HOMES = {"Control": "client", "Inspector": "client", "TaskSummary": "client",
          "ControlTimeout": "commands", "Reply": "commands", "LaneEntry": "registry",
          "Registry": "registry", "WorkerInfo": "registry"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
