"""``hubbub call``, ``status``, ``purge`` and ``dead``: sending and inspecting messages."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import click
from rich.table import Table
from rich.text import Text

from hubbub._redact import redact
from hubbub.cli._common import APP_HELP, BROKER_HELP, console, friendly, open_hub, plain, run
from hubbub.cli.workers import NO_REGISTRY, read_workers, worker_table
from hubbub.errors import HubbubError, TransportError
from hubbub.hub import Hub
from hubbub.transports import DeadLetter, QueueStats, Transport
from hubbub.transports._dead import task_of

T = TypeVar("T")


@click.command(short_help="Send a task by name; print its id (--wait: its result).")
@click.argument("task")
@click.argument("args", default="[]")
@click.option("--kwargs", "kwargs_json", default="{}", metavar="JSON",
              help="Keyword arguments as a JSON object, e.g. '{\"x\": 1}'.")
@click.option("-A", "--app", default=None, help=APP_HELP)
@click.option("--broker", default=None, help=BROKER_HELP)
@click.option("-q", "--queue", default=None, help="Queue to send to (default: the task's).")
@click.option("--countdown", type=click.FloatRange(min=0), default=None,
              help="Seconds to wait before the task may run.")
@click.option("--priority", type=click.IntRange(0, 9), default=None,
              help="0..9, higher runs first (default: the task's, else 0).")
@click.option("--wait", is_flag=True,
              help="Wait for the result and print it as JSON (needs a result store).")
@click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds --wait waits.")
@friendly
def call(task: str, args: str, kwargs_json: str, app: str | None, broker: str | None,
         queue: str | None, countdown: float | None, priority: int | None, wait: bool,
         timeout: float) -> None:
    """Send TASK by name with ARGS, a JSON array (e.g. '[2, 3]'); print its id.

    TASK is the registered name (module.function, e.g. shop.add). Without --app the task
    need not be importable here: it is sent by name to the broker.
    """
    try:
        parsed_args, parsed_kwargs = json.loads(args), json.loads(kwargs_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(parsed_args, list):
        parsed_args = [parsed_args]
    if not isinstance(parsed_kwargs, dict):
        raise click.BadParameter("--kwargs must be a JSON object")
    hub = open_hub(app, broker)
    try:
        result = hub.send_task(task, parsed_args, parsed_kwargs, queue=queue,
                               countdown=countdown, priority=priority)
        console.print(plain(result.id))
        if wait:
            console.print_json(json.dumps(result.get(timeout=timeout)))
    finally:
        hub.close()


@click.command()
@click.option("-A", "--app", default=None, help=APP_HELP)
@click.option("--broker", default=None, help=BROKER_HELP)
@friendly
def status(app: str | None, broker: str | None) -> None:
    """Show per-queue counts (ready, delayed, leased (running) and dead), then the live
    workers (as `hubbub workers`).

    Reads the broker of --app, or --broker, or $HUBBUB_BROKER; nothing is changed.
    """
    hub = open_hub(app, broker)
    try:
        stats: list[QueueStats] = _on_broker(hub, "status", lambda t: t.stats(None))
        found = read_workers(hub)
    finally:
        hub.close()
    table = Table(title=plain(f"hubbub — {redact(hub.settings.broker)}"))
    for column in ("queue", "ready", "delayed", "leased", "dead"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for s in stats:
        dead_count = plain(s.dead)
        if s.dead:
            dead_count.stylize("red")
        table.add_row(plain(s.queue), plain(s.ready), plain(s.delayed), plain(s.leased),
                      dead_count)
    if not stats:
        table.add_row("(no queues yet)", "", "", "", "")
    console.print(table)
    console.print(plain(NO_REGISTRY) if found is None else worker_table(found))


@click.command()
@click.argument("queue")
@click.option("-A", "--app", default=None, help=APP_HELP)
@click.option("--broker", default=None, help=BROKER_HELP)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@friendly
def purge(queue: str, app: str | None, broker: str | None, yes: bool) -> None:
    """Delete every waiting (ready or delayed) message of QUEUE. Leased ones are kept."""
    hub = open_hub(app, broker)
    try:
        if not yes:
            click.confirm(f"Delete all waiting messages of queue {queue!r}?", abort=True)
        count: int = _on_broker(hub, "purge", lambda t: t.purge(queue))
    finally:
        hub.close()
    console.print(Text.assemble(f"purged {count} messages from ", plain(queue)))


class Duration(click.ParamType[float]):
    """A duration on the command line: ``30s``, ``15m``, ``2h``, ``2d``, or plain seconds."""

    name = "duration"
    UNITS: ClassVar[dict[str, float]] = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip().lower()
        unit = self.UNITS.get(text[-1:], None)
        number = text[:-1] if unit is not None else text
        try:
            seconds = float(number) * (unit or 1.0)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            self.fail(f"{value!r} is not a duration; write e.g. 30s, 15m, 2h or 2d", param, ctx)
        return seconds


def interactive() -> bool:
    """True when a person can answer a prompt (stdin is a terminal)."""
    return sys.stdin.isatty()


@click.command()
@click.option("-A", "--app", default=None, help=APP_HELP)
@click.option("--broker", default=None, help=BROKER_HELP)
@click.option("-q", "--queue", default=None,
              help="Only this queue's dead letters (listing and --purge).")
@click.option("--requeue", "requeue_ids", multiple=True, metavar="ID",
              help="Send the dead letter with this id back to its queue (repeatable).")
@click.option("--all", "requeue_all", is_flag=True,
              help="Send every dead letter back to its queue (all queues; -q does not "
                   "narrow it).")
@click.option("--delete", "delete_ids", multiple=True, metavar="ID",
              help="Delete the dead letter with this id for good (repeatable); asks first "
                   "unless --yes.")
@click.option("--purge", is_flag=True,
              help="Delete every dead letter that matches --older-than, --task and -q "
                   "(all of them when none is given); asks first unless --yes.")
@click.option("--older-than", type=Duration(), default=None, metavar="DURATION",
              help="With --purge: only those that died at least this long ago "
                   "(30s, 15m, 2h, 2d).")
@click.option("--task", default=None, metavar="NAME",
              help="With --purge: only those whose message names this task (module.name).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before --delete or --purge.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Dead letters to list at most (listing only; requeueing has no limit).")
@friendly
def dead(app: str | None, broker: str | None, queue: str | None, requeue_ids: tuple[str, ...],
         requeue_all: bool, delete_ids: tuple[str, ...], purge: bool, older_than: float | None,
         task: str | None, yes: bool, limit: int) -> None:
    """List dead letters with their reasons, requeue them (--requeue ID, --all), delete them
    (--delete ID) or purge them (--purge, narrowed by --older-than, --task and -q).

    Dead letters are also dropped by the broker once past the retention
    (HUBBUB_DEAD_LETTER_TTL, default 7 days) or the cap per queue (HUBBUB_MAX_DEAD_LETTERS,
    default 10,000). A task shows as '?' when its body is not a readable hubbub message
    (another program's, or damaged); signed messages are read without checking the
    signature, for display and matching only.
    """
    actions = [name for name, given in (("--requeue/--all", requeue_ids or requeue_all),
                                        ("--delete", delete_ids), ("--purge", purge)) if given]
    if len(actions) > 1:
        raise click.UsageError(f"use one of {' and '.join(actions)} at a time")
    if (older_than is not None or task is not None) and not purge:
        raise click.UsageError("--older-than and --task narrow --purge; add --purge")
    if (purge or delete_ids) and not yes:
        what = (_purge_description(older_than, task, queue) if purge
                else f"{len(delete_ids)} dead letter(s)")
        if not interactive():
            raise click.ClickException(f"not deleting {what} without confirmation: stdin is "
                                       "not a terminal; pass --yes")
        click.confirm(f"Delete {what} for good?", abort=True)
    hub = open_hub(app, broker)

    async def go(transport: Transport) -> int | list[DeadLetter]:
        if requeue_all:
            return await transport.requeue_dead(None)
        if requeue_ids:
            return await transport.requeue_dead(list(requeue_ids))
        if delete_ids:
            return await transport.delete_dead(list(delete_ids))
        if purge:
            return await transport.purge_dead(older_than=older_than, task=task, queue=queue)
        return await transport.list_dead(queue, limit=limit)

    try:
        if purge:  # may read every dead letter of the broker: show that it is working
            with console.status("purging dead letters..."):
                outcome = _on_broker(hub, "dead letters", go)
        else:
            outcome = _on_broker(hub, "dead letters", go)
    finally:
        hub.close()
    if isinstance(outcome, int):
        verb = "deleted" if delete_ids else "purged" if purge else "requeued"
        console.print(f"{verb} {outcome} dead letters")
        return
    table = Table(title="dead letters")
    for column in ("id", "queue", "task", "reason"):
        table.add_column(column, overflow="fold")
    for letter in outcome:
        table.add_row(plain(letter.id), plain(letter.queue), plain(task_name(letter.body)),
                      plain(letter.reason))
    console.print(table)


def _purge_description(older_than: float | None, task: str | None, queue: str | None) -> str:
    what = "every dead letter"
    if queue is not None:
        what += f" of queue {queue!r}"
    if task is not None:
        what += f" for task {task!r}"
    if older_than is not None:
        what += f" that died over {older_than:g}s ago"
    return what


def task_name(body: object) -> str:
    """The task a stored body names, signed or not, or ``'?'`` when it cannot be read.

    The body came from the broker and may be anything: another program's message, bytes
    that are not UTF-8, JSON nested too deep to parse. None of that is an error here.
    """
    return task_of(body) or "?"


def _on_broker(hub: Hub, what: str, op: Callable[[Transport], Awaitable[T]]) -> T:
    """Run ``op`` on a fresh connection to the hub's broker and close it.

    Raises:
        HubbubError: what the transport raised.
        TransportError: the transport failed in a way it did not translate (it choked on
            data it found on the broker); one line instead of a traceback.
    """

    async def go() -> T:
        async with hub.open_transport() as transport:
            return await op(transport)

    try:
        return run(go())
    except HubbubError:
        raise
    except Exception as exc:
        raise TransportError(
            f"{what}: the broker holds data hubbub cannot read ({type(exc).__name__}: {exc}); "
            "please report this as a bug"
        ) from exc
