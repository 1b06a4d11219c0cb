"""The control plane: what runs beside the data path so that workers can be watched.

It is the worker registry (:mod:`hubbub.control.registry`): every worker keeps an entry in
the result store, renewed with each heartbeat; ``hubbub workers`` and ``hubbub status`` read
it. And it is remote control: commands and replies (:mod:`hubbub.control.commands`) on the
broker's plane (:mod:`hubbub.control.plane`), answered in each worker by its
:mod:`~hubbub.control.responder` and sent by :class:`~hubbub.control.client.Control`
(``hub.control``, ``hubbub inspect``, ``hubbub control``).
"""

from __future__ import annotations

from hubbub.control.client import Control, Inspector, TaskSummary
from hubbub.control.commands import ControlTimeout, Reply
from hubbub.control.registry import LaneEntry, Registry, WorkerInfo

__all__ = ["Control", "ControlTimeout", "Inspector", "LaneEntry", "Registry", "Reply",
           "TaskSummary", "WorkerInfo"]
