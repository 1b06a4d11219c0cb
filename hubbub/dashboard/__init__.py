"""The web dashboard: ``hubbub dashboard -A app:hub`` (extra ``hubbub[dashboard]``).

Server-rendered pages over the hub's broker, result store (with its task history), worker
registry, control plane and schedules; live through server-sent events; loopback by default
and behind a login when exposed. See docs/dashboard.md.
"""

from __future__ import annotations

from hubbub.dashboard.app import create_app
from hubbub.dashboard.config import DEFAULT_BIND, DashboardConfig

__all__ = ["DEFAULT_BIND", "DashboardConfig", "create_app"]
