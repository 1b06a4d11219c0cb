"""What each page shows and what each action does: plain functions of the request that
return a template's context (or an action's one-line note)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment
from markupsafe import Markup, escape
from starlette.requests import Request

from hubbub.dashboard.config import DashboardConfig
from hubbub.dashboard.data import BUCKET, Source, dead_task, masked
from hubbub.errors import HubbubError
from hubbub.results import State
from hubbub.results.base import HistoryQuery
from hubbub.schedule.entries import ScheduleEntry

__all__ = ["Views", "chart", "install_filters"]

SEARCH_LIMIT = 100  # rows a task search shows
CONTROL_COMMANDS = {  # the worker actions a form may ask for, and their arguments
    "shutdown": (), "pool_grow": ("n", "queue"), "pool_shrink": ("n", "queue"),
    "add_queue": ("queue",), "cancel_queue": ("queue",),
}


def when(instant: float | None) -> str:
    """An epoch instant as UTC text, or a dash."""
    if instant is None:
        return "—"
    return datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: float | None) -> str:
    """A duration for people: ``12 ms``, ``3.4 s``, ``2m 5s``, or a dash."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(round(value), 60)
    return f"{minutes}m {secs}s"


def ago(instant: float | None) -> str:
    return "—" if instant is None else f"{seconds(max(0.0, time.time() - instant))} ago"


def chart(series: list[int], *, label: str, css: str = "line", height: int = 80,
          width: int = 600) -> Markup:
    """A line chart of ``series`` as inline SVG (no script, no library)."""
    top = max(max(series, default=0), 1)
    step = width / max(len(series) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - v / top * (height - 4) - 2:.1f}"
                      for i, v in enumerate(series))
    title = escape(f"{label}: {sum(series)} in the last {len(series)} min, peak {top}/min")
    return Markup(  # noqa: S704 (every piece is a number or escaped)
        f'<svg class="chart {escape(css)}" viewBox="0 0 {width} {height}" role="img" '
        f'preserveAspectRatio="none" aria-label="{title}"><title>{title}</title>'
        f'<polyline points="{points}"/></svg>')


def install_filters(env: Environment) -> None:
    env.filters.update(when=when, seconds=seconds, ago=ago, masked=masked)
    env.globals.update(chart=chart, states=[s.value for s in State])


def _number(text: str | None, name: str) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{name} {text!r} is not a time: use 2026-01-31T12:00 (UTC) "
                             "or epoch seconds") from None


class Views:
    """The pages and actions, over one :class:`Source`."""

    def __init__(self, source: Source, config: DashboardConfig) -> None:
        self.source = source
        self.config = config

    # -- pages -----------------------------------------------------------------------------

    async def overview(self, request: Request) -> dict[str, Any]:
        data = await self.source.overview()
        rate = [round(100 * f / n) if n else 0 for f, n in zip(data.failed, data.finished,
                                                                strict=True)]
        return {"o": data, "failure_rate": rate, "bucket": BUCKET,
                "history_off": self.source.history_off}

    async def workers(self, request: Request) -> dict[str, Any]:
        workers = await self.source.workers()
        running = await self.source.running() if workers else {}
        return {"workers": workers, "running": running, "now": time.time()}

    async def tasks(self, request: Request) -> dict[str, Any]:
        q = request.query_params
        if self.source.history_off:  # say so, rather than show searches that find nothing
            return {"rows": [], "q": q, "error": "", "took": 0.0, "limit": SEARCH_LIMIT,
                    "history_off": self.source.history_off}
        state = q.get("state") or None
        error = ""
        rows: list[Any] = []
        try:
            if state is not None and state not in State.__members__:
                raise ValueError(f"state {state!r} is not one of {', '.join(State)}")
            query = HistoryQuery(id=q.get("id") or None, task=q.get("task") or None,
                                 state=State(state) if state else None,
                                 worker=q.get("worker") or None,
                                 since=_number(q.get("since"), "since"),
                                 until=_number(q.get("until"), "until"), limit=SEARCH_LIMIT)
            started = time.perf_counter()
            rows = await self.source.search(query)
            took = time.perf_counter() - started
        except ValueError as exc:
            error, took = str(exc), 0.0
        return {"rows": rows, "q": q, "error": error, "took": took, "limit": SEARCH_LIMIT,
                "history_off": ""}

    async def task(self, request: Request) -> dict[str, Any]:
        id_ = request.path_params["id"]
        record, row, detail = await self.source.task(id_)
        found = record or row
        resend = (found is not None and found.state in (State.FAILURE, State.REVOKED)
                  and detail.note is not None and detail.note.exact)
        return {"id": id_, "record": record, "row": row, "detail": detail, "resend": resend,
                "history_off": self.source.history_off}

    async def queues(self, request: Request) -> dict[str, Any]:
        stats = await self.source.queues()
        return {"queues": stats, "rates": {s.queue: self.source.rate(s.queue) for s in stats}}

    async def dead(self, request: Request) -> dict[str, Any]:
        queue = request.query_params.get("queue") or None
        letters = await self.source.dead_letters(queue)
        return {"letters": [(d, dead_task(d)) for d in letters], "queue": queue or ""}

    async def schedules(self, request: Request) -> dict[str, Any]:
        slots, leader, note = await self.source.schedules()
        now = time.time()
        entries: list[tuple[ScheduleEntry, float | None, float]] = []
        for entry in sorted(self.source.hub.schedules.values(), key=lambda e: e.name):
            last = slots.get(entry.name)
            entries.append((entry, None if last is None else last.slot,
                            entry.trigger.next_after(now)))
        return {"entries": entries, "leader": leader, "store_note": note, "now": now}

    # -- actions ---------------------------------------------------------------------------

    async def revoke(self, request: Request, form: dict[str, str]) -> str:
        return await self.source.revoke(request.path_params["id"], terminate=False)

    async def terminate(self, request: Request, form: dict[str, str]) -> str:
        return await self.source.revoke(request.path_params["id"], terminate=True)

    async def retry(self, request: Request, form: dict[str, str]) -> str:
        return await self.source.retry(request.path_params["id"])

    async def purge(self, request: Request, form: dict[str, str]) -> str:
        queue = form.get("queue", "")
        if not queue:
            raise ValueError("name the queue to purge")
        if form.get("confirm") != queue:
            return f"not purged: type the queue's name ({queue}) to confirm"
        return await self.source.purge(queue)

    async def requeue(self, request: Request, form: dict[str, str]) -> str:
        return await self.source.requeue(_ids(request, form))

    async def delete(self, request: Request, form: dict[str, str]) -> str:
        return await self.source.delete_dead(_ids(request, form))

    async def control(self, request: Request, form: dict[str, str]) -> str:
        worker, command = form.get("worker", ""), form.get("command", "")
        if not worker or command not in CONTROL_COMMANDS:
            raise ValueError(f"unknown worker action {command!r}: one of "
                             f"{', '.join(CONTROL_COMMANDS)}")
        arguments: dict[str, Any] = {}
        for name in CONTROL_COMMANDS[command]:
            value = form.get(name, "").strip()
            if name == "n":
                if not value.isdigit() or not 0 < int(value) <= 1000:
                    raise ValueError(f"n must be a whole number from 1 to 1000, not {value!r}")
                arguments["n"] = int(value)
            elif value:
                arguments[name] = value
            elif command in ("add_queue", "cancel_queue"):
                raise ValueError(f"{command} needs a queue name")
        return await self.source.control(worker, command, arguments)


def _ids(request: Request, form: dict[str, str]) -> list[str]:
    ids = [i for i in form.get("ids", "").split() if i]
    if not ids:
        raise HubbubError("choose at least one dead letter")
    return ids
