"""Periodic tasks: entries (cron and intervals), the beat that fires them, its leader lock.

``hubbub.schedule.entries`` is plain data and slot arithmetic (the hub imports it);
``hubbub.schedule.beat`` is the runtime and ``hubbub.schedule.store`` the state it keeps in
the result store. This package module imports neither runtime part, so that importing the
hub never pulls in the beat.
"""

from __future__ import annotations

from hubbub.schedule.entries import Cron, Interval, ScheduleEntry, slot_id

__all__ = ["Cron", "Interval", "ScheduleEntry", "slot_id"]
