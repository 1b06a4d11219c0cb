"""``hubbub call``, ``status``, ``purge`` and ``dead``: sending and inspecting messages."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from rich.table import Table
from rich.text import Text

from hubbub._redact import redact
from hubbub.cli._common import APP_HELP, BROKER_HELP, console, friendly, open_hub, plain, run
from hubbub.codecs import json_loads
from hubbub.errors import HubbubError, TransportError
from hubbub.hub import Hub
from hubbub.signing import unverified_body
from hubbub.transports import DeadLetter, QueueStats, Transport

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
    """Show per-queue counts: ready, delayed, leased (running) and dead.

    Reads the broker of --app, or --broker, or $HUBBUB_BROKER; nothing is changed.
    """
    hub = open_hub(app, broker)
    try:
        stats: list[QueueStats] = _on_broker(hub, "status", lambda t: t.stats(None))
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


@click.command()
@click.option("-A", "--app", default=None, help=APP_HELP)
@click.option("--broker", default=None, help=BROKER_HELP)
@click.option("-q", "--queue", default=None, help="Only this queue's dead letters.")
@click.option("--requeue", "requeue_ids", multiple=True, metavar="ID",
              help="Send the dead letter with this id back to its queue (repeatable).")
@click.option("--all", "requeue_all", is_flag=True,
              help="Send every dead letter back to its queue (all queues; -q does not "
                   "narrow it).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Dead letters to list at most (listing only; requeueing has no limit).")
@friendly
def dead(app: str | None, broker: str | None, queue: str | None, requeue_ids: tuple[str, ...],
         requeue_all: bool, limit: int) -> None:
    """List dead letters with their reasons, or requeue them (--requeue ID, --all).

    A task shows as '?' when its body is not a readable hubbub message (another program's,
    or damaged); signed messages are read without checking the signature, for display only.
    """
    hub = open_hub(app, broker)

    async def go(transport: Transport) -> int | list[DeadLetter]:
        if requeue_all:
            return await transport.requeue_dead(None)
        if requeue_ids:
            return await transport.requeue_dead(list(requeue_ids))
        return await transport.list_dead(queue, limit=limit)

    try:
        outcome = _on_broker(hub, "dead letters", go)
    finally:
        hub.close()
    if isinstance(outcome, int):
        console.print(f"requeued {outcome} dead letters")
        return
    table = Table(title="dead letters")
    for column in ("id", "queue", "task", "reason"):
        table.add_column(column, overflow="fold")
    for letter in outcome:
        table.add_row(plain(letter.id), plain(letter.queue), plain(task_name(letter.body)),
                      plain(letter.reason))
    console.print(table)


def task_name(body: object) -> str:
    """The task a stored body names, signed or not, or ``'?'`` when it cannot be read.

    The body came from the broker and may be anything: another program's message, bytes
    that are not UTF-8, JSON nested too deep to parse. None of that is an error here.
    """
    if not isinstance(body, bytes | bytearray):
        return "?"
    try:
        value = json_loads(unverified_body(bytes(body)))
    except (ValueError, TypeError, RecursionError):
        return "?"
    task = value.get("task") if isinstance(value, dict) else None
    return task if isinstance(task, str) and task else "?"


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
