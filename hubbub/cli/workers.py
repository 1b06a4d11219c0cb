"""``hubbub workers``, and the workers part of ``hubbub status``: the worker registry."""

from __future__ import annotations

import json
import time

import click
from rich.table import Table
from rich.text import Text

from hubbub._redact import redact
from hubbub.cli._common import APP_HELP, BROKER_HELP, console, errors, friendly, open_hub, plain
from hubbub.cli._common import run as run_async
from hubbub.control.registry import Registry, WorkerInfo
from hubbub.errors import HubbubError, ResultError
from hubbub.hub import Hub

NO_REGISTRY = ("no worker registry: this hub keeps no results (the registry lives in the "
               "result store; set results, or $HUBBUB_RESULTS)")


@click.command(short_help="List the live workers from the worker registry.")
@click.option("-A", "--app", default=None, help=APP_HELP)
@click.option("--broker", default=None, help=BROKER_HELP)
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per worker and line instead of a table.")
@friendly
def workers(app: str | None, broker: str | None, as_json: bool) -> None:
    """List live workers: name, host, pid, lanes, processed/failed/running, memory, load
    and the age of the last heartbeat.

    Workers write their entry to the hub's result store every heartbeat (2 s by default); a
    worker that stopped cleanly is gone at once, one that was killed after three missed
    heartbeats.
    """
    hub = open_hub(app, broker)
    try:
        found = read_workers(hub)
    finally:
        hub.close()
    if found is None:
        errors.print(plain(NO_REGISTRY), soft_wrap=True, highlight=False)
        return
    if as_json:
        for info in found:
            click.echo(json.dumps(info.to_json()))
        return
    console.print(worker_table(found))


def read_workers(hub: Hub) -> list[WorkerInfo] | None:
    """The live workers in ``hub``'s registry, or None when it keeps no results.

    Raises:
        HubbubError: the result store could not be reached or read (one line).
    """
    results = hub.open_results()
    if results is None:
        return None

    async def go() -> list[WorkerInfo]:
        await results.connect()
        try:
            return await Registry(results).workers()
        finally:
            await results.close()

    try:
        return run_async(go())
    except HubbubError:
        raise
    except Exception as exc:
        raise ResultError(f"the worker registry in {redact(hub.settings.results or '')} cannot "
                          f"be read ({type(exc).__name__}: {exc})") from exc


def worker_table(found: list[WorkerInfo], now: float | None = None) -> Table:
    """A table of ``found``; every value is shown as inert text (anyone may write entries)."""
    now = time.time() if now is None else now
    table = Table(title="workers")
    for column in ("worker", "host", "pid", "lanes", "done/failed/running", "RSS", "load",
                   "heartbeat"):
        table.add_column(column, justify="right" if column in ("pid", "RSS") else "left")
    for info in found:
        name = plain(info.name)
        if info.damaged:
            name.append(" (damaged entry)", style="red")
        counts = plain(f"{info.processed}/{info.failed}/{info.running}")
        if info.failed:
            counts.stylize("red")
        rss = "-" if info.rss_mib is None else f"{info.rss_mib:.0f} MiB"
        load = "-" if info.load is None else " ".join(f"{v:.2f}" for v in info.load)
        table.add_row(name, plain(info.host), plain(info.pid),
                      plain("  ".join(lane.describe() for lane in info.lanes)), counts,
                      plain(rss), plain(load), plain(_age(now - info.heartbeat_at)))
    if not found:
        table.add_row(Text("(no live workers)"), *[""] * 7)
    return table


def _age(seconds: float) -> str:
    if seconds < 0:
        return "just now"
    if seconds < 120:
        return f"{seconds:.1f}s ago"
    return f"{seconds / 60:.0f}m ago"
