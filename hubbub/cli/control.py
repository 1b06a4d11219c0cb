"""``hubbub inspect ...`` and ``hubbub control ...``: remote control of running workers.

Both send one command over the broker's control plane (``hub.control``) and print one answer
per worker: a table, or with ``--json`` one JSON object per worker and line. The exit status
is 1, with a one-line error, when an addressed worker (or, for a broadcast, every worker)
did not answer in time, when a worker answered with an error, or when the broker cannot be
reached.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from hubbub.cli._common import APP_HELP, BROKER_HELP, console, fail, friendly, open_hub, plain
from hubbub.control.client import DEFAULT_TIMEOUT, TaskSummary
from hubbub.control.commands import ControlTimeout, Reply

DESTINATION_HELP = ("Only these workers, by name (comma-separated, or repeat the option); "
                    "default: every worker. `hubbub workers` lists the names.")
TIMEOUT_HELP = "Seconds to wait for replies."
JSON_HELP = ("Print one JSON object per worker and line ({worker, ok, value, error}) instead "
             "of a table.")
LANE_HELP = ("The lane to act on, by any queue it serves (needed when the worker runs "
             "several lanes, from several --queue options).")

Render = Callable[[list[Reply[Any]]], Any]


def _common(fn: Callable[..., None]) -> Callable[..., None]:
    """The options every inspect and control command takes."""
    for option in reversed([
        click.option("-A", "--app", default=None, help=APP_HELP),
        click.option("--broker", default=None, help=BROKER_HELP),
        click.option("-d", "--destination", "destination", multiple=True, metavar="NAME[,NAME]",
                     help=DESTINATION_HELP),
        click.option("-t", "--timeout", type=click.FloatRange(min=0, min_open=True),
                     default=DEFAULT_TIMEOUT, show_default=True, help=TIMEOUT_HELP),
        click.option("-j", "--json", "as_json", is_flag=True, help=JSON_HELP),
    ]):
        fn = option(fn)
    return fn


def send(options: dict[str, Any], command: str, arguments: dict[str, Any],
         render: Render) -> None:
    """Send ``command``, print the replies, exit 1 on a missing reply or an error reply."""
    names = [n.strip() for given in options["destination"] for n in given.split(",")
             if n.strip()]
    hub = open_hub(options["app"], options["broker"])
    missing = None
    try:
        try:
            replies = hub.control.call(command, arguments, destination=names or None,
                                       timeout=options["timeout"])
        except ControlTimeout as exc:
            replies, missing = exc.replies, str(exc)
    finally:
        hub.close()
    if options["as_json"]:
        for reply in replies:
            click.echo(json.dumps({"worker": reply.worker, "ok": reply.ok, "value": reply.value,
                                   "error": reply.error}, default=repr))
    elif replies:
        console.print(render(replies))
    if missing is not None:
        fail(missing)
        sys.exit(1)
    if any(not reply.ok for reply in replies):
        sys.exit(1)


def _error(reply: Reply[Any]) -> Text:
    return Text.assemble(("error: ", "red"), plain(reply.error or ""))


def _ago(at: float | None, now: float) -> str:
    if at is None:
        return "-"
    seconds = now - at
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _tasks_table(title: str) -> Render:
    def render(replies: list[Reply[Any]]) -> Table:
        now = time.time()
        table = Table(title=title)
        for column in ("worker", "id", "task", "args", "queue", "started", "eta"):
            table.add_column(column)
        for reply in replies:
            if not reply.ok:
                table.add_row(plain(reply.worker), _error(reply), *[""] * 5)
                continue
            tasks = [t for t in map(TaskSummary.from_json, reply.value or []) if t is not None]
            if not tasks:
                table.add_row(plain(reply.worker), Text("(none)", style="dim"), *[""] * 5)
            for task in tasks:
                eta = "-" if task.eta is None else time.strftime("%H:%M:%S",
                                                                time.localtime(task.eta))
                table.add_row(plain(reply.worker), plain(task.id), plain(task.name),
                              plain(task.args), plain(task.queue),
                              plain(_ago(task.started_at, now)), plain(eta))
        return table

    return render


def _pairs_table(title: str, pairs: Callable[[Any], list[tuple[str, Any]]]) -> Render:
    def render(replies: list[Reply[Any]]) -> Table:
        table = Table(title=title)
        for column in ("worker", "name", "value"):
            table.add_column(column)
        for reply in replies:
            if not reply.ok:
                table.add_row(plain(reply.worker), "", _error(reply))
                continue
            for key, value in pairs(reply.value):
                table.add_row(plain(reply.worker), plain(key), plain(_shown(value)))
        return table

    return render


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | dict):
        return json.dumps(value, default=repr)
    return str(value)


def _stats_pairs(value: Any) -> list[tuple[str, Any]]:
    if not isinstance(value, dict):
        return []
    pairs = [(k, v) for k, v in value.items() if k != "lanes"]
    for lane in value.get("lanes") or []:
        if isinstance(lane, dict):
            queues = ",".join(str(q) for q in lane.get("queues") or [])
            pairs.append((f"lane {queues}", ", ".join(
                f"{k} {_shown(v)}" for k, v in lane.items() if k != "queues")))
    return pairs


def _dict_pairs(value: Any) -> list[tuple[str, Any]]:
    return sorted(value.items()) if isinstance(value, dict) else []


def _names_table(replies: list[Reply[Any]]) -> Table:
    table = Table(title="registered tasks")
    table.add_column("worker")
    table.add_column("task")
    for reply in replies:
        names = reply.value if reply.ok and isinstance(reply.value, list) else []
        if not reply.ok:
            table.add_row(plain(reply.worker), _error(reply))
        elif not names:
            table.add_row(plain(reply.worker), Text("(none)", style="dim"))
        for name in names:
            table.add_row(plain(reply.worker), plain(name))
    return table


def _reply_text(reply: Reply[Any]) -> Text:
    if not reply.ok:
        return _error(reply)
    if isinstance(reply.value, dict):
        return plain(", ".join(f"{k} {_shown(v)}" for k, v in reply.value.items()))
    return plain(_shown(reply.value))


def _answers(title: str) -> Render:
    def render(replies: list[Reply[Any]]) -> Table:
        table = Table(title=title)
        table.add_column("worker")
        table.add_column("reply")
        for reply in replies:
            table.add_row(plain(reply.worker), _reply_text(reply))
        return table

    return render


# -- hubbub inspect ------------------------------------------------------------------------------


@click.group(short_help="Ask running workers what they hold and know.")
def inspect() -> None:
    """Ask running workers what they hold and know, over the broker's control plane.

    Every worker answers (or only those named with -d); the command waits until each
    worker in the registry answered, or --timeout. Exit status 1 when an addressed worker
    (or every worker) did not answer, or the broker cannot be reached.
    """


def _inspect_command(name: str, help_text: str, render: Render) -> click.Command:
    @_common
    @friendly
    def command(**options: Any) -> None:
        send(options, name, {}, render)

    return click.command(name, help=help_text)(command)


for _name, _help, _render in [
    ("active", "The tasks each worker runs now: id, name, an argument preview, queue and "
               "when it started.", _tasks_table("active tasks")),
    ("reserved", "The tasks each worker holds but has not started (prefetched, waiting for "
                 "a slot).", _tasks_table("reserved tasks")),
    ("scheduled", "Held tasks whose eta is in the future. Delayed tasks wait in the broker, "
                  "not in workers, so this is nearly always empty.",
     _tasks_table("scheduled tasks")),
    ("registered", "The task names each worker knows.", _names_table),
    ("stats", "Counters (processed, failed, running, held), lanes and pools, uptime, memory "
              "(RSS, MiB) and load of each worker.", _pairs_table("stats", _stats_pairs)),
    ("conf", "Each worker's settings; passwords in URLs are masked and signing keys are "
             "shown by id only.", _pairs_table("configuration", _dict_pairs)),
    ("ping", "Ask workers to answer: the live ones reply pong.", _answers("ping")),
]:
    inspect.add_command(_inspect_command(_name, _help, _render))


# -- hubbub control ------------------------------------------------------------------------------


@click.group(short_help="Steer running workers: shutdown, pool size, queues, revoke.")
def control() -> None:
    """Steer running workers over the broker's control plane.

    Every worker acts (or only those named with -d) and answers; exit status 1 when an
    addressed worker (or every worker) did not answer, when one answered with an error,
    or when the broker cannot be reached. With signing keys on the hub, commands are signed
    and workers refuse unsigned ones.
    """


def _control(name: str, **click_options: Any) -> Callable[[Callable[..., None]],
                                                             click.Command]:
    def wrap(fn: Callable[..., None]) -> click.Command:
        return control.command(name, **click_options)(_common(friendly(fn)))

    return wrap


@_control("ping")
def _ping(**options: Any) -> None:
    """Ask workers to answer: the live ones reply pong."""
    send(options, "ping", {}, _answers("ping"))


@_control("revoke")
@click.argument("ids", nargs=-1, required=True)
@click.option("--terminate", is_flag=True,
              help="Also stop the tasks that run now (see docs/tasks.md for how each pool "
                   "stops one).")
def _revoke(ids: tuple[str, ...], terminate: bool, **options: Any) -> None:
    """Revoke task IDS: they never start; with --terminate, running ones are stopped.

    The revoke is stored in the result store, where every worker looks for it; the workers
    addressed answer with the ids it took effect for.
    """
    send(options, "revoke", {"ids": list(ids), "terminate": terminate},
         _answers("revoke"))


@_control("shutdown")
def _shutdown(**options: Any) -> None:
    """Stop workers gracefully, exactly as SIGTERM does: fetch nothing more, release
    unstarted work at once, let running tasks finish within the worker's --grace."""
    send(options, "shutdown", {}, _answers("shutdown"))


def _resize(command: str, what: str) -> None:
    @_control(command.replace("_", "-"), help=f"{what} a worker's pool. "
              "Needs a pool that can resize (threads, prefork); with --autoscale on, the "
              "autoscaler later moves it back within its bounds.")
    @click.argument("n", type=click.IntRange(min=1), default=1)
    @click.option("--queue", default=None, help=LANE_HELP)
    def resize(n: int, queue: str | None, **options: Any) -> None:
        arguments: dict[str, Any] = {"n": n}
        if queue is not None:
            arguments["queue"] = queue
        send(options, command, arguments, _answers(command.replace("_", " ")))


_resize("pool_grow", "Add N slots (default 1) to")
_resize("pool_shrink", "Remove N slots (default 1, at least one remains) from")


@_control("autoscale")
@click.argument("bounds", nargs=-1, required=True, metavar="MAX,MIN")
@click.option("--queue", default=None, help=LANE_HELP)
def _autoscale(bounds: tuple[str, ...], queue: str | None, **options: Any) -> None:
    """Autoscale a worker's pool between MIN and MAX slots (as `hubbub worker --autoscale
    MAX,MIN`; `autoscale 8 2` works too). Needs a pool that can resize."""
    parts = [p for given in bounds for p in given.split(",") if p.strip()]
    try:
        high, low = (int(p) for p in parts)
    except ValueError:
        raise click.BadParameter("write MAX,MIN, e.g. 8,2", param_hint="MAX,MIN") from None
    if not 1 <= low <= high:
        raise click.BadParameter(f"needs 1 <= MIN <= MAX, got {high},{low}",
                                 param_hint="MAX,MIN")
    arguments: dict[str, Any] = {"max": high, "min": low}
    if queue is not None:
        arguments["queue"] = queue
    send(options, "autoscale", arguments, _answers("autoscale"))


@_control("add-queue")
@click.argument("queue")
@click.option("--lane", default=None, metavar="QUEUE",
              help="The lane to add it to, by any queue it serves (needed when the worker "
                   "runs several lanes).")
def _add_queue(queue: str, lane: str | None, **options: Any) -> None:
    """Start consuming QUEUE (Celery's add_consumer)."""
    arguments: dict[str, Any] = {"queue": queue}
    if lane is not None:
        arguments["lane"] = lane
    send(options, "add_queue", arguments, _answers("add queue"))


@_control("cancel-queue")
@click.argument("queue")
def _cancel_queue(queue: str, **options: Any) -> None:
    """Stop consuming QUEUE (Celery's cancel_consumer); held tasks from it still run."""
    send(options, "cancel_queue", {"queue": queue}, _answers("cancel queue"))


@_control("loglevel")
@click.argument("level", type=click.Choice(["debug", "info", "warning", "error", "critical"],
                                           case_sensitive=False))
def _loglevel(level: str, **options: Any) -> None:
    """Change workers' log level until they restart."""
    send(options, "loglevel", {"level": level.lower()}, _answers("log level"))


@control.command("rate-limit")
@click.option("-A", "--app", default=None, help=APP_HELP)
@click.option("--broker", default=None, help=BROKER_HELP)
@click.argument("task")
@click.argument("rate")
@friendly
def _rate_limit(task: str, rate: str, app: str | None, broker: str | None) -> None:
    """Set TASK's rate limit for the whole fleet: RATE is N/s, N/m or N/h, or "none" to go
    back to the task's own rate_limit option.

    The limit is kept in the result store, not sent to workers: every worker (those that
    start later too) applies it within about two seconds.
    """
    hub = open_hub(app, broker)
    try:
        hub.control.rate_limit(task, None if rate.lower() == "none" else rate)
    finally:
        hub.close()
    shown = "its own rate_limit option" if rate.lower() == "none" else rate
    click.echo(f"{task}: rate limit {shown} for the whole fleet (workers apply it within ~2 s)")


__all__ = ["control", "inspect", "send"]
