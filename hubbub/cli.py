"""The ``hubbub`` command: worker, call, status, purge, dead, demo."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from hubbub import __version__
from hubbub._demo import run_demo
from hubbub._loader import load_hub
from hubbub._redact import redact
from hubbub.errors import HubbubError
from hubbub.hub import Hub
from hubbub.worker import WorkerLoop, run_worker
from hubbub.worker.pools import POOLS, make_pool

T = TypeVar("T")
console = Console()
errors = Console(stderr=True)

APP_HELP = "The app as module:attribute, e.g. shop.tasks:hub (attribute defaults to 'hub')."
BROKER_HELP = "Broker URL (default: $HUBBUB_BROKER, else sqlite:///hubbub.db here)."


def friendly(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn hubbub errors into one red line and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except HubbubError as exc:
            errors.print(f"[red]error:[/red] {redact(str(exc))}", highlight=False)
            sys.exit(1)

    return wrapper


def open_hub(app: str | None, broker: str | None) -> Hub:
    if app:
        hub = load_hub(app)
        if broker:
            raise click.UsageError("give --app or --broker, not both")
        return hub
    return Hub(overrides={"broker": broker})


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hubbub")
def main() -> None:
    """hubbub: a distributed task queue that starts with zero servers."""


@main.command()
@click.option("-A", "--app", required=True, help=APP_HELP)
@click.option("-Q", "--queues", default=None,
              help="Comma-separated queues to consume (default: the hub's default queue).")
@click.option("--pool", type=click.Choice(sorted(POOLS)), default="async", show_default=True,
              help="How tasks run: solo (one at a time), threads (blocking I/O), async "
                   "(coroutines; sync tasks in threads).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None,
              help="Tasks at once (default: solo 1, threads 8, async 100).")
@click.option("--prefetch", type=click.IntRange(min=0), default=None,
              help="Deliveries held beyond free slots (default: min(concurrency, 16)).")
@click.option("--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds a graceful stop waits for running tasks.")
@click.option("--lease", type=click.FloatRange(min=0.5), default=None,
              help="Seconds a delivery stays leased without renewal (default 30).")
@click.option("-n", "--name", default=None, help="Worker name in logs (default host:pid).")
@click.option("-l", "--loglevel", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="Log level.")
@friendly
def worker(app: str, queues: str | None, pool: str, concurrency: int | None,
           prefetch: int | None, grace: float, lease: float | None, name: str | None,
           loglevel: str) -> None:
    """Run a worker: consume queues and run their tasks until SIGTERM/SIGINT.

    The first signal stops gracefully (unstarted work is released at once; running tasks get
    --grace seconds); a second one releases running work and exits.
    """
    logging.basicConfig(level=loglevel.upper(),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    hub = load_hub(app)
    loop = WorkerLoop(hub, queues=queues.split(",") if queues else None,
                      pool=make_pool(pool, concurrency), prefetch=prefetch, grace=grace,
                      name=name, lease=lease)
    run_worker(loop)


@main.command()
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


@main.command()
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


@main.command()
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


@main.command()
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


@main.command()
@click.option("-n", "--tasks", "count", type=click.IntRange(min=10), default=2000,
              show_default=True, help="How many tasks to send.")
@click.option("--pool", type=click.Choice(sorted(POOLS)), default="async", show_default=True,
              help="The worker's pool.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None,
              help="The worker's concurrency (default: the pool's).")
@click.option("--db", default=None,
              help="SQLite file to use (default: a fresh temporary file, removed afterwards).")
@friendly
def demo(count: int, pool: str, concurrency: int | None, db: str | None) -> None:
    """Start a worker on the embedded SQLite broker, send a mix of tasks, report."""
    sys.exit(run_demo(console, count=count, pool=pool, concurrency=concurrency, db=db))
