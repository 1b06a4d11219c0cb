"""``hubbub worker``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from hubbub._loader import load_hub
from hubbub.cli._common import APP_HELP, LOGLEVEL_HELP, friendly, settings_lines
from hubbub.cli._process import as_service, service_options
from hubbub.events import WorkerOnline
from hubbub.settings import LOOPS, loop_from_environment
from hubbub.worker import WorkerLoop, event_loop, run_worker
from hubbub.worker.lane import Lane, parse_lane
from hubbub.worker.pools import (
    POOLS,
    cannot_autoscale,
    describe_pools,
    make_pool,
    pool_class,
    resizable_pools,
)

if TYPE_CHECKING:
    from hubbub.hub import Hub
    from hubbub.metrics import WorkerMetrics
    from hubbub.worker import Companion

log = logging.getLogger("hubbub.worker")


# Read from the pool classes, so that a new pool or a pool that learns to resize needs no
# edit here; and only when help is shown, since reading them imports every pool, which a
# worker that serves one pool does not need (issue #18).
def _pool_help() -> str:
    return "How tasks run: " + ", ".join(
        f"{kind} ({summary})" for kind, summary in describe_pools().items()) + "."


def _autoscale_help() -> str:
    return ("Grow the pool up to MAX while work waits and every slot is busy; shrink to "
            f"MIN when idle ({' and '.join(resizable_pools())}).")


class _HelpWhenShown(click.Option):
    """An option whose help text is made by ``help_of()`` when help is printed."""

    def __init__(self, *args: Any, help_of: Callable[[], str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help_of = help_of

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = self.help_of()
        return super().get_help_record(ctx)


@click.command()
@click.option("-A", "--app", required=True, help=APP_HELP)
@click.option("-Q", "--queues", default=None,
              help="Comma-separated queues to consume (default: the hub's default queue).")
@click.option("--queue", "lanes", multiple=True, metavar="QUEUES=POOL[:N]",
              help="A lane: these comma-separated queues on their own pool, e.g. "
                   "cpu=prefork:2 io=async:500 (repeat for several pools in one worker; "
                   "replaces -Q/--pool/-c).")
@click.option("--autoscale", default=None, metavar="MAX,MIN",
              cls=_HelpWhenShown, help_of=_autoscale_help)
@click.option("--beat", is_flag=True,
              help="Also run the scheduler for the app's periodic tasks (as `hubbub beat`; "
                   "any number of beats may run, one leads).")
@click.option("--pool", type=click.Choice(sorted(POOLS)), default="prefork", show_default=True,
              cls=_HelpWhenShown, help_of=_pool_help)
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None,
              help="Tasks at once; for prefork and hybrid, child processes (default: solo 1, "
                   "threads 8, async 100, prefork and hybrid the CPU count, gevent 100).")
@click.option("--coroutines", type=click.IntRange(min=1), default=None,
              help="hybrid: tasks each child process runs at once (default 100); the worker "
                   "runs -c times this many.")
@click.option("--max-tasks-per-child", type=click.IntRange(min=1), default=None,
              help="prefork, hybrid, gevent: replace a child process after it ran this many "
                   "tasks (default: never).")
@click.option("--max-memory-per-child", type=click.FloatRange(min=0, min_open=True),
              default=None, metavar="MIB",
              help="prefork, hybrid, gevent: replace a child process whose resident memory "
                   "is above this many MiB after a task (default: no limit).")
@click.option("--prefetch", type=click.IntRange(min=0), default=None,
              help="Deliveries held beyond free slots (default: about 10 ms of tasks at "
                   "the lane's pace, at least min(concurrency, 16), at most concurrency).")
@click.option("--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds a graceful stop waits for running tasks.")
@click.option("--lease", type=click.FloatRange(min=0.5), default=None,
              help="Seconds a delivery stays leased without renewal (default 30).")
@click.option("--heartbeat", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between heartbeats; the worker registry entry lives for three.")
@click.option("--celery-queue", "celery_queues", multiple=True, metavar="QUEUES[=POOL[:N]]",
              help="Also run Celery's queues (the migration bridge, docs/celery.md): Celery "
                   "protocol v2 JSON messages from Celery's broker, on the worker's pool or "
                   "one of their own (repeat for several lanes).")
@click.option("--celery-broker", default=None, metavar="URL",
              help="Celery's broker for --celery-queue (default: $HUBBUB_CELERY_BROKER, else "
                   "the hub's broker if it is Redis or RabbitMQ).")
@click.option("--celery-results", default=None, metavar="URL",
              help="Celery's Redis result backend: bridged tasks' results are also written "
                   "there for AsyncResult(id).get() (default: $HUBBUB_CELERY_RESULTS).")
@click.option("--celery-result-expires", type=click.FloatRange(min=1), default=86400.0,
              show_default=True, help="Seconds Celery's results are kept (result_expires).")
@click.option("--loop", type=click.Choice(LOOPS, case_sensitive=False), default=None,
              help="The worker's event loop: uvloop runs it in C, for less CPU per async task "
                   "(needs hubbub[uvloop]); auto is uvloop when installed, else asyncio "
                   "(default: $HUBBUB_LOOP, else auto).")
@click.option("-n", "--name", default=None, help="Worker name in logs (default host:pid).")
@click.option("--events", is_flag=True, default=False,
              help="Publish every task and worker event on the broker's events channel "
                   "(`hubbub events` and `hubbub top` show them; default: the app's events "
                   "setting, $HUBBUB_EVENTS, off).")
# -- metrics (issue 15)
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=None,
              metavar="PORT", help="Serve Prometheus metrics at http://BIND:PORT/metrics "
              "(needs hubbub[metrics]; default: off).")
@click.option("--metrics-bind", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Address the metrics server listens on.")
# -- end metrics
@click.option("-l", "--loglevel", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help=LOGLEVEL_HELP)
@service_options
@friendly
def worker(app: str, queues: str | None, lanes: tuple[str, ...], autoscale: str | None,
           beat: bool, pool: str, concurrency: int | None,
           coroutines: int | None, max_tasks_per_child: int | None,
           max_memory_per_child: float | None, prefetch: int | None, grace: float,
           lease: float | None, heartbeat: float, celery_queues: tuple[str, ...],
           celery_broker: str | None, celery_results: str | None,
           celery_result_expires: float, name: str | None, loglevel: str,
           log_format: str, logfile: str | None, pidfile: str | None,
           events: bool, metrics_port: int | None, metrics_bind: str,
           loop: str | None) -> None:
    """Run a worker: consume queues and run their tasks until SIGTERM/SIGINT.

    The first signal stops gracefully (unstarted work is released at once; running tasks get
    --grace seconds); a second one releases running work and exits.
    """
    # Before anything starts: without the extra, one error line names it.
    metrics = None if metrics_port is None else _metrics(metrics_port, metrics_bind)
    with as_service(loglevel, log_format, logfile, pidfile):
        _serve(app, queues, lanes, autoscale, beat, pool, concurrency, coroutines,
               max_tasks_per_child, max_memory_per_child, prefetch, grace, lease, heartbeat, name,
               events, celery=_Bridge(celery_queues, celery_broker, celery_results,
                                      celery_result_expires), metrics=metrics,
               loop=None if loop is None else loop.lower())


def _serve(app: str, queues: str | None, lanes: tuple[str, ...], autoscale: str | None,
           beat: bool, pool: str, concurrency: int | None, coroutines: int | None,
           max_tasks_per_child: int | None, max_memory_per_child: float | None,
           prefetch: int | None, grace: float, lease: float | None, heartbeat: float,
           name: str | None, events: bool, *, celery: _Bridge,
           metrics: WorkerMetrics | None = None, loop: str | None = None) -> None:
    hub = load_hub(app)
    banner = settings_lines(hub, {"lease": lease, "events": True if events else None})
    banner.append(_loop_line(loop))

    def announce(event: object) -> None:
        # Once connected, beside the "online" line: a broker that cannot be reached gives
        # one error line, not a banner first.
        if isinstance(event, WorkerOnline):
            for line in banner:
                log.info("%s", line)
            hub.events.unsubscribe(announce)  # a worker nobody listens to builds no events
            _trim_heap()

    hub.events.subscribe(announce)
    ctx = click.get_current_context()
    given = {p for p in ("queues", "pool", "concurrency", "autoscale")
             if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE}
    if lanes and given:
        raise click.UsageError(f"--queue lanes replace {', '.join('--' + g for g in sorted(given))}"
                               "; give each lane its pool: --queue QUEUES=POOL[:N]")
    options = {"coroutines": coroutines, "max_tasks_per_child": max_tasks_per_child,
               "max_memory_per_child": max_memory_per_child}
    if lanes:
        chosen = [parse_lane(spec, **options) for spec in lanes]
    else:
        bounds = _autoscale(autoscale, pool)
        size = bounds[0] if bounds else concurrency
        chosen = [Lane(queues.split(",") if queues else [hub.settings.default_queue],
                       make_pool(pool, size, **options), prefetch, autoscale=bounds)]
    banner.extend(f"autoscale {','.join(lane.queues)}: {lane.autoscale[0]}..{lane.autoscale[1]} "
                  f"{lane.pool.kind} slots (grows while work waits, shrinks when idle)"
                  for lane in chosen if lane.autoscale is not None)
    if celery.queues:  # -- Celery bridge (issue 17), imported only by a worker that uses it
        from hubbub.compat.celery.bridge import celery_lane

        chosen += [celery_lane(hub, spec, broker=celery.broker, results=celery.results,
                               result_expires=celery.result_expires, pool=pool,
                               concurrency=concurrency, prefetch=prefetch, **options)
                   for spec in celery.queues]
    # -- end Celery bridge
    worker = WorkerLoop(hub, lanes=chosen, grace=grace, name=name, lease=lease,
                        heartbeat=heartbeat, events=True if events else None, metrics=metrics)
    run_worker(worker, [_beat(hub)] if beat else [], loop=loop)


def _loop_line(given: str | None) -> str:
    """The banner's line on the event loop, and why that one: ``--loop``, ``$HUBBUB_LOOP``, or
    "auto"'s choice. Raises ConfigurationError (one error line) before anything starts."""
    env = loop_from_environment()
    choice = given or env or "auto"
    kind = event_loop(choice)
    origin = "from the CLI" if given else "from $HUBBUB_LOOP" if env else "default"
    if choice != "auto":
        return f"event loop {kind} ({origin})"
    why = ("uvloop is installed" if kind == "uvloop"
           else "uvloop is not installed: pip install 'hubbub[uvloop]'")
    return f"event loop {kind} (auto, {origin}: {why})"


def _trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``): starting
    up (imports, connecting) frees more than an idle worker uses again (issue #18)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).malloc_trim(0)


# What only some workers use is imported when one does, not by every idle worker (issue #18).

def _metrics(port: int, bind: str) -> WorkerMetrics:
    from hubbub.metrics import WorkerMetrics

    return WorkerMetrics(port, bind)


def _beat(hub: Hub) -> Companion:
    from hubbub.schedule.beat import Beat

    return Beat(hub)


@dataclass(frozen=True)
class _Bridge:
    """The Celery bridge's options (--celery-*)."""

    queues: tuple[str, ...]
    broker: str | None
    results: str | None
    result_expires: float


def _autoscale(spec: str | None, pool: str) -> tuple[int, int] | None:
    """(min, max) from ``MAX,MIN``."""
    if spec is None:
        return None
    if not pool_class(pool).resizable:
        raise click.UsageError("--" + cannot_autoscale(pool))
    try:
        high, low = (int(part) for part in spec.split(","))
    except ValueError:
        raise click.BadParameter("write --autoscale MAX,MIN, e.g. 8,2") from None
    if not 1 <= low <= high:
        raise click.BadParameter(f"--autoscale needs 1 <= MIN <= MAX, got {spec}")
    return low, high
