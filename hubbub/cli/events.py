"""``hubbub events``: tail the events channel of the plane, live."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import click

from hubbub._loader import load_hub
from hubbub._redact import redact
from hubbub.cli._common import APP_HELP, BROKER_HELP, errors, fail, friendly, plain
from hubbub.control.plane import Plane
from hubbub.control.publisher import CHANNEL
from hubbub.control.wire import TYPES, WireEvent, decode_batch
from hubbub.hub import Hub

RESULTS_HELP = ("Result store URL (default: the app's; without --app, $HUBBUB_RESULTS, else "
                "the broker). Beanstalkd carries events through it.")
READ_EVERY = 0.5  # seconds one read waits, so that --timeout and Ctrl+C are noticed


@dataclass(frozen=True, slots=True)
class Filters:
    """Which events to show: each given option must match (globs allowed for names)."""

    tasks: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    workers: tuple[str, ...] = ()

    def match(self, event: WireEvent) -> bool:
        if self.tasks and not any(fnmatch.fnmatchcase(event.task, p) for p in self.tasks):
            return False
        if self.workers and not any(fnmatch.fnmatchcase(event.worker, p)
                                    for p in self.workers):
            return False
        if self.states:
            names = {event.state.lower(), event.type.lower(),
                     event.type.lower().split("-", 1)[-1]}
            return any(s in names for s in self.states)
        return True


def _states(values: Sequence[str]) -> tuple[str, ...]:
    """``--state`` values, lower case; an unknown one fails with the known ones."""
    known = {w.lower() for t, state in TYPES.items()
             for w in (t, t.split("-", 1)[1], state)}
    out = []
    for value in values:
        for part in value.split(","):
            word = part.strip().lower()
            if not word:
                continue
            if word not in known:
                raise click.BadParameter(
                    f"unknown state {part.strip()!r}; use a state (SUCCESS, FAILURE, RETRY, "
                    "REVOKED, STARTED, RECEIVED, SENT, DEAD) or an event type "
                    f"({', '.join(TYPES)})", param_hint="--state")
            out.append(word)
    return tuple(out)


def describe(event: WireEvent) -> str:
    """One readable line for ``event`` (its text not yet made inert)."""
    at = time.strftime("%H:%M:%S", time.localtime(event.timestamp))
    at += f".{int(event.timestamp % 1 * 1000):03d}"
    parts = [at, f"{event.type:<18}"]
    if event.task or event.id:
        parts.append(f"{event.task or '?'}[{event.id}]")
    data = event.data
    if event.worker:
        parts.append(f"worker={event.worker}")
    elif "sender" in data:
        parts.append(f"from={data['sender']}")
    if event.queue:
        parts.append(f"queue={event.queue}")
    if event.runtime is not None:
        parts.append(f"in {event.runtime:.3f}s")
    if "attempt" in data and data["attempt"] > 1:
        parts.append(f"attempt {data['attempt']}")
    if "running" in data:
        parts.append(f"running={data['running']} processed={data.get('processed', 0)}")
    elif "processed" in data:
        parts.append(f"processed={data['processed']}")
    if "queues" in data:
        parts.append(f"queues={','.join(data['queues'])} pool={data.get('pool', '?')}"
                     f":{data.get('concurrency', '?')}")
    if event.error:
        parts.append(event.error.splitlines()[-1] if event.error.strip() else "")
    if "reason" in data:
        parts.append(data["reason"])
    return "  ".join(p for p in parts if p)


@click.command(short_help="Tail task and worker events live.")
@click.option("-A", "--app", default=None, help=APP_HELP)
@click.option("--broker", default=None, help=BROKER_HELP)
@click.option("--results", default=None, help=RESULTS_HELP)
@click.option("--task", "tasks", multiple=True, metavar="NAME",
              help="Only events of this task (a glob like 'shop.*'; repeat for several).")
@click.option("--state", "states", multiple=True, metavar="STATE",
              help="Only events in this state or of this type: SUCCESS, FAILURE, RETRY, "
                   "REVOKED, STARTED, RECEIVED, SENT, DEAD, or task-succeeded, heartbeat... "
                   "(comma-separated or repeated).")
@click.option("--worker", "workers", multiple=True, metavar="NAME",
              help="Only events of this worker (a glob; repeat for several).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per event and line.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Stop after this many events (shown ones, after filters).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds; with --count, exit 1 if fewer came.")
@friendly
def events(app: str | None, broker: str | None, results: str | None, tasks: tuple[str, ...],
           states: tuple[str, ...], workers: tuple[str, ...], as_json: bool,
           count: int | None, timeout: float | None) -> None:
    """Show task and worker events as they happen, one line each, until Ctrl+C.

    Workers publish events when started with --events (or with the app's events setting,
    $HUBBUB_EVENTS=1, which also makes producers publish task-sent). Only what happens
    after this command started is shown.
    """
    filters = Filters(tasks, _states(states), workers)
    if app and (broker or results):
        raise click.UsageError("give --app, or --broker/--results, not both")
    hub = load_hub(app) if app else Hub(overrides={"broker": broker, "results": results})
    plane = hub.open_plane()
    try:
        shown = asyncio.run(_tail(plane, redact(hub.settings.broker), filters, as_json, count,
                                  timeout))
    except KeyboardInterrupt:
        return
    except BrokenPipeError:  # piped into head: the reader is done
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if count is not None and shown < count:
        fail(f"timed out after {timeout:g}s: {shown} of {count} events came")
        sys.exit(1)


async def _tail(plane: Plane, where: str, filters: Filters, as_json: bool, count: int | None,
                timeout: float | None) -> int:
    """Print matching events until ``count`` or ``timeout``; the number printed."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    shown = 0
    await plane.connect()
    try:
        subscription = await plane.subscribe(CHANNEL)
        errors.print(plain(f"watching events of {where} (Ctrl+C to stop)"),
                     soft_wrap=True, highlight=False)
        out = sys.stdout
        while count is None or shown < count:
            wait = READ_EVERY if deadline is None else min(READ_EVERY, deadline - loop.time())
            if wait <= 0:
                break
            lines = []
            for body in await subscription.read(wait=wait):
                for event in decode_batch(body):
                    if not filters.match(event):
                        continue
                    lines.append(json.dumps(event.to_json()) if as_json
                                 else plain(describe(event), limit=1000).plain)
                    shown += 1
                    if count is not None and shown >= count:
                        break
                if count is not None and shown >= count:
                    break
            if lines:
                out.write("\n".join(lines) + "\n")
                out.flush()
        await subscription.close()
    finally:
        await plane.close()
    return shown
