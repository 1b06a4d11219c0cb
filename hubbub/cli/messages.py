"""``hubbub call``, ``status``, ``purge`` and ``dead``: sending and inspecting messages."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from hubbub._redact import redact
from hubbub.cli._common import APP_HELP, BROKER_HELP, console, friendly, open_hub, run


@click.command()
@click.argument("task")
@click.argument("args", default="[]")
@click.option("--kwargs", "kwargs_json", default="{}", help="Keyword arguments as a JSON object.")
@click.option("-A", "--app", default=None, help=APP_HELP)
@click.option("--broker", default=None, help=BROKER_HELP)
@click.option("-q", "--queue", default=None, help="Queue to send to (default: the task's).")
@click.option("--countdown", type=click.FloatRange(min=0), default=None,
              help="Seconds to wait before the task may run.")
@click.option("--priority", type=click.IntRange(0, 9), default=None, help="0..9, higher first.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds --wait waits.")
@friendly
def call(task: str, args: str, kwargs_json: str, app: str | None, broker: str | None,
         queue: str | None, countdown: float | None, priority: int | None, wait: bool,
         timeout: float) -> None:
    """Send TASK by name with ARGS, a JSON array (e.g. '[2, 3]'); print its id."""
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
        console.print(result.id)
        if wait:
            console.print_json(json.dumps(result.get(timeout=timeout)))
    finally:
        hub.close()


@click.command()
@click.option("-A", "--app", default=None, help=APP_HELP)
@click.option("--broker", default=None, help=BROKER_HELP)
@friendly
def status(app: str | None, broker: str | None) -> None:
    """Show per-queue counts: ready, delayed, leased (running) and dead."""
    hub = open_hub(app, broker)

    async def collect() -> list[Any]:
        transport = hub.open_transport()
        await transport.connect()
        try:
            return await transport.stats(None)
        finally:
            await transport.close()

    stats = run(collect())
    table = Table(title=f"hubbub — {redact(hub.settings.broker)}")
    for column in ("queue", "ready", "delayed", "leased", "dead"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for s in stats:
        table.add_row(s.queue, str(s.ready), str(s.delayed), str(s.leased),
                      f"[red]{s.dead}[/red]" if s.dead else "0")
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
    if not yes:
        click.confirm(f"Delete all waiting messages of queue {queue!r}?", abort=True)

    async def go() -> int:
        transport = hub.open_transport()
        await transport.connect()
        try:
            return await transport.purge(queue)
        finally:
            await transport.close()

    console.print(f"purged {run(go())} messages from {queue}")


@click.command()
@click.option("-A", "--app", default=None, help=APP_HELP)
@click.option("--broker", default=None, help=BROKER_HELP)
@click.option("-q", "--queue", default=None, help="Only this queue's dead letters.")
@click.option("--requeue", "requeue_ids", multiple=True, metavar="ID",
              help="Send this dead letter back to its queue (repeatable).")
@click.option("--all", "requeue_all", is_flag=True, help="Send every dead letter back.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Rows to show.")
@friendly
def dead(app: str | None, broker: str | None, queue: str | None, requeue_ids: tuple[str, ...],
         requeue_all: bool, limit: int) -> None:
    """List dead letters with their reasons, or requeue them (--requeue ID, --all)."""
    hub = open_hub(app, broker)

    async def go() -> Any:
        transport = hub.open_transport()
        await transport.connect()
        try:
            if requeue_all:
                return await transport.requeue_dead(None)
            if requeue_ids:
                return await transport.requeue_dead(list(requeue_ids))
            return await transport.dead_letters(queue, limit=limit)
        finally:
            await transport.close()

    outcome = run(go())
    if isinstance(outcome, int):
        console.print(f"requeued {outcome} dead letters")
        return
    table = Table(title="dead letters")
    for column in ("id", "queue", "task", "reason"):
        table.add_column(column, overflow="fold")
    for letter in outcome:
        table.add_row(letter.id, letter.queue, _task_name(letter.body), letter.reason)
    console.print(table)


def _task_name(body: bytes) -> str:
    try:
        value = json.loads(body)
    except ValueError:
        return "?"
    return str(value.get("task", "?")) if isinstance(value, dict) else "?"
