"""``hubbub top``: a live view of the workers, the queues, throughput and failures.

Every ``--interval`` seconds it reads the worker registry (the result store) and the queues'
counts (the broker); where workers publish events (``--events``) it also tails the events
channel for throughput, in/out rates and failures. Everything it shows came from a store
anyone may write to, so every value goes through ``plain()``. Keys: q quits, s cycles the
sort, f cycles a filter by queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hubbub._loader import load_hub
from hubbub._redact import redact
from hubbub.cli._common import APP_HELP, BROKER_HELP, console, friendly, plain
from hubbub.cli.events import RESULTS_HELP
from hubbub.control.monitor import BUCKET, HISTORY, Monitor
from hubbub.control.plane import Plane, Subscription
from hubbub.control.publisher import CHANNEL
from hubbub.control.registry import Registry, WorkerInfo
from hubbub.control.wire import decode_batch
from hubbub.errors import ConfigurationError, HubbubError
from hubbub.hub import Hub
from hubbub.results.base import ResultBackend
from hubbub.transports.base import QueueStats, Transport

SORTS = ("name", "running", "processed", "failed")
BARS = " ▁▂▃▄▅▆▇█"
TASKS_SHOWN = 3  # running tasks listed per worker
FAILURES_SHOWN = 5


@dataclass
class View:
    """What the keys changed: sort, queue filter, quit; ``changed`` wakes the redraw."""

    sort: int = 0
    filter: str | None = None
    quit: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def key(self, char: str, queues: list[str]) -> None:
        if char in ("q", "Q", "\x03"):
            self.quit = True
        elif char in ("s", "S"):
            self.sort = (self.sort + 1) % len(SORTS)
        elif char in ("f", "F"):
            choices: list[str | None] = [None, *queues]
            at = choices.index(self.filter) if self.filter in choices else 0
            self.filter = choices[(at + 1) % len(choices)]
        else:
            return
        self.changed.set()


@dataclass
class Sources:
    """What top reads from; ``notes`` says what is missing or failing, one line each."""

    transport: Transport
    results: ResultBackend | None
    plane: Plane | None
    subscription: Subscription | None = None
    notes: dict[str, str] = field(default_factory=dict)


@click.command(short_help="A live view of workers, queues, throughput and failures.")
@click.option("-A", "--app", default=None, help=APP_HELP)
@click.option("--broker", default=None, help=BROKER_HELP)
@click.option("--results", default=None, help=RESULTS_HELP)
@click.option("-Q", "--queues", default=None,
              help="Comma-separated queues to show besides those live workers serve "
                   "(default: the hub's default queue).")
@click.option("--interval", type=click.FloatRange(min=0.2), default=1.0, show_default=True,
              help="Seconds between reads of the registry and the queues.")
@click.option("--once", is_flag=True, help="Print one view and exit (no keys, no live screen).")
@friendly
def top(app: str | None, broker: str | None, results: str | None, queues: str | None,
        interval: float, once: bool) -> None:
    """Watch the fleet live: workers with their running tasks, queues with ready, delayed,
    leased and dead counts and in/out rates, throughput over the last minutes, failures.

    Keys: q quit, s cycle the sort (name, running, processed, failed), f cycle a filter by
    queue. Rates and failures come from events: start workers with --events (or
    $HUBBUB_EVENTS=1) to see them; without events, throughput comes from the workers'
    counters and a queue's "in" from the change of its backlog.
    """
    if app and (broker or results):
        raise click.UsageError("give --app, or --broker/--results, not both")
    hub = load_hub(app) if app else Hub(overrides={"broker": broker, "results": results})
    shown = [q for q in (queues or hub.settings.default_queue).split(",") if q]
    asyncio.run(_top(hub, shown, interval, once))


async def _top(hub: Hub, queues: list[str], interval: float, once: bool) -> None:
    sources = await _open(hub)
    monitor, view = Monitor(queues=tuple(queues)), View()
    where = redact(hub.settings.broker)
    try:
        await _read(sources, monitor)
        if once:
            console.print(render(monitor, view, sources, where, time.time()))
            return
        listener = asyncio.create_task(_listen(sources, monitor))
        try:
            with _keys(view, monitor), Live(console=console, screen=True,
                                            auto_refresh=False) as live:
                while not view.quit:
                    live.update(render(monitor, view, sources, where, time.time()),
                                refresh=True)
                    view.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(view.changed.wait(), interval)
                    if not view.quit and time.time() - monitor.updated_at >= interval * 0.9:
                        await _read(sources, monitor)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
    finally:
        await _close(sources)


async def _open(hub: Hub) -> Sources:
    """Connect to the broker (failing in one line), the result store and the plane (each
    optional: what is missing becomes a note)."""
    transport = hub.open_transport()
    await transport.connect()
    sources = Sources(transport, hub.open_results(), None)
    if sources.results is None:
        sources.notes["registry"] = ("no worker registry: the hub keeps no results (set "
                                     "--results or $HUBBUB_RESULTS)")
    else:
        try:
            await sources.results.connect()
        except HubbubError as exc:
            sources.notes["registry"] = f"worker registry unavailable: {exc}"
            sources.results = None
    try:
        sources.plane = hub.open_plane()
        await sources.plane.connect()
        sources.subscription = await sources.plane.subscribe(CHANNEL)
    except (ConfigurationError, HubbubError) as exc:
        sources.notes["events"] = f"no events: {exc}"
    return sources


async def _close(sources: Sources) -> None:
    for closing in (sources.subscription, sources.plane, sources.results, sources.transport):
        if closing is not None:
            with contextlib.suppress(Exception):
                await closing.close()


async def _read(sources: Sources, monitor: Monitor) -> None:
    """One snapshot of the registry and the queues; a failure becomes a note."""
    workers: list[WorkerInfo] = monitor.workers
    if sources.results is not None:
        try:
            workers = await Registry(sources.results).workers()
            sources.notes.pop("registry", None)
        except Exception as exc:  # the store is down: keep the last workers, say so
            sources.notes["registry"] = f"worker registry unavailable: {exc}"
    names = list(dict.fromkeys([*monitor.queues, *(q for w in workers for lane in w.lanes
                                                   for q in lane.queues)]))
    stats: list[QueueStats] = list(monitor.stats.values())
    try:
        stats = await sources.transport.stats(names)
        sources.notes.pop("broker", None)
    except Exception as exc:
        sources.notes["broker"] = f"queue counts unavailable: {exc}"
    monitor.snapshot(time.time(), workers, stats)


async def _listen(sources: Sources, monitor: Monitor) -> None:
    """Feed the monitor from the events channel until cancelled."""
    if sources.subscription is None:
        return
    while True:
        try:
            bodies = await sources.subscription.read(wait=0.5)
            sources.notes.pop("events", None)
        except Exception as exc:
            sources.notes["events"] = f"events unavailable: {exc}"
            await asyncio.sleep(1.0)
            continue
        for body in bodies:
            for event in decode_batch(body):
                monitor.event(event)


@contextlib.contextmanager
def _keys(view: View, monitor: Monitor) -> Iterator[None]:
    """Read single keys from the terminal while the view runs (nothing without a tty)."""
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def pressed() -> None:
        for char in os.read(fd, 32).decode(errors="replace"):
            view.key(char, monitor.queue_names())

    tty.setcbreak(fd)
    loop.add_reader(fd, pressed)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# -- drawing ---------------------------------------------------------------------------------


def render(monitor: Monitor, view: View, sources: Sources, where: str,
           now: float) -> RenderableType:
    """The whole screen."""
    header = Text.assemble(("hubbub top", "bold"), "  ", plain(where), "  ",
                           time.strftime("%H:%M:%S", time.localtime(now)))
    if view.filter is not None:
        header.append("  queue ")
        header.append(plain(view.filter).plain, style="bold")
    parts: list[RenderableType] = [header]
    parts += [Text(note, style="yellow") for note in map(str, sources.notes.values())]
    parts += [workers_table(monitor, view, now), queues_table(monitor, view, now),
              throughput_text(monitor, now), failures_table(monitor)]
    parts.append(Text(f"q quit   s sort ({SORTS[view.sort]})   f filter by queue "
                      f"({view.filter or 'all'})", style="dim"))
    return Group(*parts)


def workers_table(monitor: Monitor, view: View, now: float) -> Table:
    workers = [w for w in monitor.workers if view.filter is None
               or any(view.filter in lane.queues for lane in w.lanes)]
    key = SORTS[view.sort]
    if key == "name":
        workers.sort(key=lambda w: w.name)
    else:
        workers.sort(key=lambda w: (-getattr(w, key), w.name))
    table = Table(title=f"workers ({len(workers)})", title_justify="left", expand=True)
    for column in ("worker", "lanes", "done", "failed", "running", "RSS", "load", "beat",
                   "running tasks"):
        table.add_column(column, justify="right" if column in (
            "done", "failed", "running", "RSS") else "left", overflow="ellipsis")
    for w in workers:
        where = f"{w.host}:{w.pid}"
        name = plain(w.name if where in (w.name, ":0") else f"{w.name} ({where})", limit=60)
        if w.damaged:
            name.append(" (damaged)", style="red")
        tasks = ", ".join(f"{t.task}[{t.id[:8]}] {max(0.0, now - t.started_at):.0f}s"
                          for t in w.tasks[:TASKS_SHOWN])
        if w.running > TASKS_SHOWN:
            tasks += f" +{w.running - min(len(w.tasks), TASKS_SHOWN)}"
        table.add_row(
            name, plain("  ".join(lane.describe() for lane in w.lanes), limit=80),
            plain(w.processed), Text(str(w.failed), style="red" if w.failed else ""),
            plain(w.running), plain("-" if w.rss_mib is None else f"{w.rss_mib:.0f}M"),
            plain("-" if w.load is None else f"{w.load[0]:.2f}"),
            plain(f"{max(0.0, now - w.heartbeat_at):.0f}s"), plain(tasks, limit=120))
    if not workers:
        table.add_row(Text("(no live workers)", style="dim"), *[""] * 8)
    return table


def queues_table(monitor: Monitor, view: View, now: float) -> Table:
    rows = [r for r in monitor.queue_rows(now) if view.filter in (None, r.name)]
    if SORTS[view.sort] != "name":
        rows.sort(key=lambda r: (-(r.ready + r.leased), r.name))
    table = Table(title="queues", title_justify="left", expand=True)
    for column in ("queue", "ready", "delayed", "leased", "dead", "in/s", "out/s"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for r in rows:
        table.add_row(plain(r.name, limit=60), str(r.ready), str(r.delayed), str(r.leased),
                      Text(str(r.dead), style="red" if r.dead else ""), _rate(r.rate_in),
                      _rate(r.rate_out))
    return table


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def throughput_text(monitor: Monitor, now: float) -> Text:
    counts = monitor.throughput(now)
    high = max(counts) or 1
    spark = "".join(BARS[min(len(BARS) - 1, round(c / high * (len(BARS) - 1)))]
                    for c in counts)
    source = "events" if monitor.events_seen else "worker counters"
    return Text.assemble(
        ("throughput ", "bold"),
        f"{monitor.rate(now, 10):,.1f}/s (10s)  {monitor.rate(now, 60):,.1f}/s (1m)  "
        f"{monitor.rate(now, HISTORY):,.1f}/s ({HISTORY / 60:.0f}m)  ",
        (spark, "green"), f"  {BUCKET:.0f}s a bar, from {source}")


def failures_table(monitor: Monitor) -> RenderableType:
    failed = sum(w.failed for w in monitor.workers)
    if not monitor.failures:
        return Text(f"failures: {failed} by live workers"
                    + ("" if monitor.events_seen else " (details need events)"),
                    style="red" if failed else "dim")
    table = Table(title=f"latest failures ({failed} by live workers)", title_justify="left",
                  expand=True)
    for column in ("at", "task", "worker", "error"):
        table.add_column(column, overflow="ellipsis")
    for event in list(monitor.failures)[-FAILURES_SHOWN:][::-1]:
        error = event.error.strip().splitlines()[-1] if event.error.strip() else ""
        table.add_row(time.strftime("%H:%M:%S", time.localtime(event.timestamp)),
                      plain(f"{event.task}[{event.id[:8]}]", limit=60),
                      plain(event.worker, limit=40), plain(error, limit=120))
    return table
