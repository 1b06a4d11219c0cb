"""``hubbub beat`` (the scheduler) and ``hubbub schedule list``."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import click
from rich.table import Table

from hubbub._loader import load_hub
from hubbub._redact import redact
from hubbub.cli._common import (
    APP_HELP,
    LOGLEVEL_HELP,
    console,
    errors,
    friendly,
    plain,
    run,
)
from hubbub.cli._process import as_service, service_options
from hubbub.errors import ConfigurationError
from hubbub.schedule.beat import Beat
from hubbub.schedule.entries import Cron, ScheduleEntry
from hubbub.schedule.store import Lease, SlotState, open_store

log = logging.getLogger("hubbub.beat")


@click.command()
@click.option("-A", "--app", required=True, help=APP_HELP)
@click.option("--lease", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds the leader's lease lasts; a beat that dies is replaced within "
                   "about this long.")
@click.option("--grace", type=click.FloatRange(min=0), default=None,
              help="Seconds a slot may be late and still run (default: twice the lease); "
                   "later slots follow each entry's missed policy.")
@click.option("-l", "--loglevel", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help=LOGLEVEL_HELP)
@service_options
@friendly
def beat(app: str, lease: float, grace: float | None, loglevel: str, log_format: str,
         logfile: str | None, pidfile: str | None) -> None:
    """Run the scheduler: send the app's periodic tasks on time until SIGTERM/SIGINT.

    Run as many beats as you like, on any hosts: one leads through a lease in the result
    store, the others stand by and take over when it stops or dies. No slot is sent twice.
    """
    with as_service(loglevel, log_format, logfile, pidfile):
        hub = load_hub(app)
        try:
            scheduler = Beat(hub, lease=lease, grace=grace)
            if not hub.schedules:
                log.warning("%s has no schedule entries; add some with hub.schedule(...) or "
                            "@hub.periodic(...)", app)
            log.info("beat for %s, state in %s", app, redact(hub.settings.results or ""))
            asyncio.run(_run_until_signal(scheduler))
        finally:
            hub.close()


async def _run_until_signal(scheduler: Beat) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        log.warning("%s: stopping", signal.Signals(signum).name)
        scheduler.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await scheduler.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


@click.group()
def schedule() -> None:
    """Inspect the periodic tasks of an app."""


@schedule.command("list")
@click.option("-A", "--app", required=True, help=APP_HELP)
@friendly
def list_entries(app: str) -> None:
    """Show each entry, its last slot (sent, skipped or its start) and next run; who leads."""
    hub = load_hub(app)
    try:
        state: dict[str, SlotState] = {}
        leader: Lease | None = None
        note = ""
        try:
            state, leader = run(_read_state(hub.settings.results))
        except ConfigurationError as exc:
            note = f"no schedule state: {exc}"
    finally:
        hub.close()
    now = time.time()
    table = Table(title=plain(f"schedule — {app}"))
    for column in ("entry", "task", "when", "missed", "last slot", "next run"):
        table.add_column(column, overflow="fold")
    for entry in sorted(hub.schedules.values(), key=lambda e: e.name):
        table.add_row(*(plain(cell) for cell in (
            entry.name, entry.task, entry.trigger.describe(), entry.missed,
            _last(entry, state.get(entry.name)), _next(entry, now))))
    if not hub.schedules:
        table.add_row("(no entries)", "", "", "", "", "")
    if leader is not None:
        table.caption = plain(f"leader: {leader.owner} (lease for another "
                              f"{max(0.0, leader.expires_at - now):.1f}s)")
    elif not note:
        table.caption = plain("no beat is leading: start one with hubbub beat -A " + app)
    console.print(table)
    if note:
        errors.print(plain(note, limit=2000), style="yellow", highlight=False)


async def _read_state(url: str | None) -> tuple[dict[str, SlotState], Lease | None]:
    store = open_store(url)
    await store.connect()
    try:
        return await store.last_slots(), await store.leader()
    finally:
        await store.close()


def _last(entry: ScheduleEntry, state: SlotState | None) -> str:
    if state is None:
        return "never"
    text = _when(entry, state.slot)
    return text if state.published else f"{text} (claimed, not yet sent)"


def _next(entry: ScheduleEntry, now: float) -> str:
    slot = entry.trigger.next_after(now)
    return f"{_when(entry, slot)}, in {_span(slot - now)}"


def _when(entry: ScheduleEntry, instant: float) -> str:
    utc = datetime.fromtimestamp(instant, UTC)
    text = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(entry.trigger, Cron) and entry.trigger.tz != "UTC":
        local = utc.astimezone(ZoneInfo(entry.trigger.tz))
        text += f" ({local.strftime('%H:%M:%S %Z')})"
    return text


def _span(seconds: float) -> str:
    seconds = max(0, round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return " ".join(parts[:2]) or "0s"
