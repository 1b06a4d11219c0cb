"""The control plane: what runs beside the data path so that workers can be watched.

Today it is the worker registry (:mod:`hubbub.control.registry`): every worker keeps an
entry in the result store, renewed with each heartbeat. ``hubbub workers`` and
``hubbub status`` read it; they never talk to a worker directly.
"""

from __future__ import annotations

from hubbub.control.registry import LaneEntry, Registry, WorkerInfo

__all__ = ["LaneEntry", "Registry", "WorkerInfo"]
