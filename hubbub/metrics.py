"""Prometheus metrics: a worker's own (``hubbub worker --metrics-port N``) and the fleet's.

Needs the ``metrics`` extra (``pip install hubbub[metrics]``: prometheus-client), imported
only when metrics are asked for, so a worker without them does no per-task work at all.

Two sources:

- :class:`WorkerMetrics` lives in one worker's main process. It counts outcomes from the
  worker's in-process events (``TaskSucceeded``, ``TaskAttemptFailed``, ``TaskRevoked``,
  ``TaskDeadLettered``), which the main process emits for every task whatever the pool: a
  prefork, hybrid or gevent child only runs the task and hands the outcome back, so no
  Prometheus multiprocess mode is needed. Queue depths and pool utilisation are read when
  scraped, the depths at most every ``depth_every`` seconds.
- :class:`FleetMetrics` reads the store: queue depths from the broker's stats and the live
  workers from the registry. The dashboard serves it at ``/metrics``
  (:func:`fleet_metrics_app`, or ``await FleetMetrics(hub).render()``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from hubbub.control.registry import Registry
from hubbub.errors import ConfigurationError
from hubbub.events import Event, TaskAttemptFailed, TaskDeadLettered, TaskRevoked, TaskSucceeded

if TYPE_CHECKING:
    from hubbub.hub import Hub
    from hubbub.transports.base import QueueStats, Transport
    from hubbub.worker.held import Held
    from hubbub.worker.loop import WorkerLoop

__all__ = ["FleetMetrics", "WorkerMetrics", "fleet_metrics_app", "prometheus"]

log = logging.getLogger("hubbub.metrics")

# Seconds: tasks are milliseconds to minutes; waits can be hours (a backlog, an eta).
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0, 600.0, 1800.0, 3600.0)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                300.0, 900.0, 3600.0, 14400.0, 86400.0)
DEPTH_EVERY = 5.0  # seconds a scrape reuses the queue depths read by the one before
STATS_WITHIN = 5.0  # seconds a scrape waits for the broker's queue stats


def prometheus() -> Any:
    """The ``prometheus_client`` module.

    Raises:
        ConfigurationError: the ``metrics`` extra is not installed.
    """
    try:  # here, not at the top: hubbub imports and runs without the extra
        import prometheus_client
        import prometheus_client.core  # also makes it an attribute of the package
    except ImportError:
        raise ConfigurationError("metrics need an extra: pip install hubbub[metrics] "
                                 "(prometheus-client)") from None
    return prometheus_client


def _depth_families(prom: Any, stats: Sequence[QueueStats]) -> Iterator[Any]:
    depth = prom.core.GaugeMetricFamily(
        "hubbub_queue_depth", "Messages in a queue by state (ready, delayed, leased, dead).",
        labels=["queue", "state"])
    for one in stats:
        for state in ("ready", "delayed", "leased", "dead"):
            depth.add_metric([one.queue, state], getattr(one, state))
    yield depth


class _Depths:
    """Queue stats read at most every ``every`` seconds, only when asked (a scrape)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._read_at = float("-inf")
        self._stats: list[QueueStats] = []

    def fresh(self) -> bool:
        return time.monotonic() - self._read_at < self.every

    def keep(self, stats: list[QueueStats]) -> list[QueueStats]:
        self._read_at, self._stats = time.monotonic(), stats
        return stats

    @property
    def last(self) -> list[QueueStats]:
        return self._stats


class WorkerMetrics:
    """One worker's metrics, served over HTTP at ``http://BIND:PORT/metrics``.

    Give it to ``WorkerLoop(hub, metrics=WorkerMetrics(9100))``; ``hubbub worker
    --metrics-port 9100`` does. The worker starts the server once it is connected and stops
    it when it ends. Metrics (labels in brackets):

    - ``hubbub_tasks_total`` (task, state): final states SUCCESS, FAILURE, REVOKED, and
      RETRY for every attempt that failed and will be retried;
    - ``hubbub_task_retries_total`` (task): attempts that failed and will be retried;
    - ``hubbub_task_runtime_seconds`` (task): histogram of run times, every attempt;
    - ``hubbub_task_wait_seconds`` (task): histogram of the time from sending (the
      envelope's ``created_at``) to starting, every attempt;
    - ``hubbub_dead_letters_total`` (queue): messages this worker dead-lettered;
    - ``hubbub_queue_depth`` (queue, state): from the broker, refreshed at most every
      ``depth_every`` seconds, and only while someone scrapes;
    - ``hubbub_pool_running``, ``hubbub_pool_slots``, ``hubbub_pool_utilisation`` (lane,
      pool): tasks running now, slots, and their ratio per lane.

    Args:
        port: the TCP port to listen on (0: any free one; ``port`` says which once started).
        bind: the address to listen on; the default keeps it on this machine.
        depth_every: seconds a scrape reuses the queue depths read by the one before.

    Raises:
        ConfigurationError: the ``metrics`` extra is not installed.
    """

    def __init__(self, port: int, bind: str = "127.0.0.1", *,
                 depth_every: float = DEPTH_EVERY) -> None:
        prom = self._prom = prometheus()
        self.port, self.bind = port, bind
        self.registry = prom.CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.tasks = prom.Counter("hubbub_tasks", "Tasks by name and final state.",
                                  ["task", "state"], registry=reg)
        self.retries = prom.Counter("hubbub_task_retries", "Attempts that failed and will be "
                                    "retried.", ["task"], registry=reg)
        self.runtime = prom.Histogram("hubbub_task_runtime_seconds", "Run time of each attempt.",
                                      ["task"], buckets=RUNTIME_BUCKETS, registry=reg)
        self.wait = prom.Histogram("hubbub_task_wait_seconds", "From sending to starting, "
                                   "each attempt.", ["task"], buckets=WAIT_BUCKETS, registry=reg)
        self.dead_letters = prom.Counter("hubbub_dead_letters", "Messages dead-lettered by this "
                                         "worker.", ["queue"], registry=reg)
        self._depths = _Depths(depth_every)
        self._series: dict[str, _TaskSeries] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            TaskSucceeded: self._succeeded, TaskAttemptFailed: self._failed,
            TaskRevoked: self._revoked, TaskDeadLettered: self._dead}
        self._worker: WorkerLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: Transport | None = None
        self._server: Any = None
        reg.register(_Collector(self))

    # -- the worker's side -------------------------------------------------------------------

    def start(self, worker: WorkerLoop, transport: Transport) -> None:
        """Count ``worker``'s outcomes and serve them (called by ``WorkerLoop.run`` on its
        loop, once connected; ``transport`` is where queue depths are read).

        Raises:
            ConfigurationError: the port cannot be listened on.
        """
        self._worker, self._loop = worker, asyncio.get_running_loop()
        self._transport = transport
        worker.hub.events.subscribe(self.observe)
        try:
            self._server, _ = self._prom.start_http_server(self.port, self.bind, self.registry)
        except OSError as exc:
            worker.hub.events.unsubscribe(self.observe)
            raise ConfigurationError(f"metrics cannot listen on {self.bind}:{self.port} "
                                     f"({exc.strerror or exc}); choose another --metrics-port"
                                     ) from exc
        self.port = self._server.server_port
        log.info("metrics at http://%s:%d/metrics", self.bind, self.port)

    def stop(self) -> None:
        """Stop serving and counting (a second call does nothing)."""
        if self._worker is not None:
            self._worker.hub.events.unsubscribe(self.observe)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._server = None

    def started(self, held: Held) -> None:
        """A task starts now: its wait since it was sent (the loop calls this per task)."""
        env = held.envelope
        self._of(env.task).wait.observe(max(0.0, (held.started_at or time.time())
                                            - env.created_at))

    def observe(self, event: Event) -> None:
        """Count one of the worker's events (an ``EventBus`` subscriber)."""
        # By type, not an isinstance chain: this runs for every event of every task.
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _of(self, task: str) -> _TaskSeries:
        series = self._series.get(task)
        if series is None:
            series = self._series[task] = _TaskSeries(self, task)
        return series

    def _succeeded(self, event: Any) -> None:
        series = self._of(event.task)
        series.success.inc()
        series.runtime.observe(event.duration)

    def _failed(self, event: Any) -> None:
        series = self._of(event.task)
        series.runtime.observe(event.duration)
        if event.will_retry:
            series.retries.inc()
            series.retry.inc()
        else:
            series.failure.inc()

    def _revoked(self, event: Any) -> None:
        self.tasks.labels(event.task, "REVOKED").inc()

    def _dead(self, event: Any) -> None:
        self.dead_letters.labels(event.queue).inc()

    def render(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST

    # -- read when scraped (on the HTTP server's thread) ---------------------------------------

    def _queue_stats(self) -> list[QueueStats]:
        worker, loop, transport = self._worker, self._loop, self._transport
        if worker is None or loop is None or transport is None or self._depths.fresh():
            return self._depths.last
        try:
            future = asyncio.run_coroutine_threadsafe(transport.stats(worker.queues), loop)
            return self._depths.keep(future.result(timeout=STATS_WITHIN))
        except Exception as exc:  # the broker is away, or the worker stops: the rest serves
            log.debug("queue stats for metrics failed: %r", exc)
            return self._depths.keep(self._depths.last)


class _TaskSeries:
    """One task's labelled series, looked up once (``labels()`` costs a lock and a hash)."""

    __slots__ = ("failure", "retries", "retry", "runtime", "success", "wait")

    def __init__(self, metrics: WorkerMetrics, task: str) -> None:
        self.success = metrics.tasks.labels(task, "SUCCESS")
        self.failure = metrics.tasks.labels(task, "FAILURE")
        self.retry = metrics.tasks.labels(task, "RETRY")
        self.retries = metrics.retries.labels(task)
        self.runtime = metrics.runtime.labels(task)
        self.wait = metrics.wait.labels(task)


class _Collector:
    """What a worker's scrape reads now: pool use per lane, and queue depths."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # read at scrape time; nothing to check when registering

    def collect(self) -> Iterator[Any]:
        prom, worker = self.metrics._prom, self.metrics._worker
        if worker is None:
            return
        gauge = prom.core.GaugeMetricFamily
        running = gauge("hubbub_pool_running", "Tasks running now.", labels=["lane", "pool"])
        slots = gauge("hubbub_pool_slots", "Tasks the lane runs at once.", labels=["lane", "pool"])
        use = gauge("hubbub_pool_utilisation", "Running / slots.", labels=["lane", "pool"])
        for lane in list(worker.lanes):
            labels = [",".join(lane.queues), lane.pool.kind]
            size = lane.pool.concurrency
            running.add_metric(labels, lane.running)
            slots.add_metric(labels, size)
            use.add_metric(labels, lane.running / size if size else 0.0)
        yield from (running, slots, use)
        yield from _depth_families(prom, self.metrics._queue_stats())


# -- the fleet, from the store (for the dashboard) --------------------------------------------


class FleetMetrics:
    """Queue depths and live workers of a whole hub, read from its broker and registry.

    ``await fleet.render()`` gives ``(body, content_type)`` for a ``/metrics`` response; it
    reads the store at most every ``every`` seconds (more scrapes reuse the last reading).
    Connections are opened on first use, on the caller's loop; ``await fleet.close()``.

    Metrics: ``hubbub_workers_up``; per worker (label ``worker``)
    ``hubbub_worker_processed_total``, ``hubbub_worker_failed_total``,
    ``hubbub_worker_running``; per lane (``worker``, ``lane``, ``pool``)
    ``hubbub_pool_slots``; ``hubbub_queue_depth`` (queue, state) for ``queues``, the hub's
    default queue and every queue a live worker serves.

    Args:
        hub: the application.
        queues: queues to report besides those.
        every: seconds a reading is reused.

    Raises:
        ConfigurationError: the ``metrics`` extra is not installed.
    """

    def __init__(self, hub: Hub, queues: Iterable[str] = (), *, every: float = 2.0) -> None:
        self._prom = prometheus()
        self.hub, self.queues, self.every = hub, tuple(queues), every
        self._transport: Transport | None = None
        self._results: Any = None
        self._body: bytes | None = None
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def render(self) -> tuple[bytes, str]:
        """The fleet's metrics in Prometheus' text format, and its content type.

        Raises:
            TransportUnavailable: the broker cannot be reached.
            ResultUnavailable: the result store (the registry) cannot be reached.
        """
        async with self._lock:
            if self._body is None or time.monotonic() - self._read_at >= self.every:
                self._body = await self._read()
                self._read_at = time.monotonic()
            return self._body, self._prom.CONTENT_TYPE_LATEST

    async def close(self) -> None:
        """Close the connections opened by ``render``."""
        transport, results, self._transport, self._results = (self._transport, self._results,
                                                               None, None)
        if transport is not None:
            await transport.close()
        if results is not None:
            await results.close()

    async def _read(self) -> bytes:
        prom = self._prom
        if self._transport is None:
            transport = self.hub.open_transport()
            await transport.connect()
            self._transport = transport
            results = self.hub.open_results()
            if results is not None:
                await results.connect()
            self._results = results
        gauge, counter = prom.core.GaugeMetricFamily, prom.core.CounterMetricFamily
        families: list[Any] = []
        queues = dict.fromkeys([self.hub.settings.default_queue, *self.queues])
        if self._results is not None:
            workers = await Registry(self._results).workers()
            families.append(gauge("hubbub_workers_up", "Live workers (in the registry).",
                                  value=len(workers)))
            processed = counter("hubbub_worker_processed", "Tasks a worker finished since it "
                                "started.", labels=["worker"])
            failed = counter("hubbub_worker_failed", "Tasks that failed on a worker since it "
                             "started.", labels=["worker"])
            running = gauge("hubbub_worker_running", "Tasks a worker runs now.",
                            labels=["worker"])
            slots = gauge("hubbub_pool_slots", "Tasks a lane runs at once.",
                          labels=["worker", "lane", "pool"])
            for info in workers:
                processed.add_metric([info.name], info.processed)
                failed.add_metric([info.name], info.failed)
                running.add_metric([info.name], info.running)
                for lane in info.lanes:
                    slots.add_metric([info.name, ",".join(lane.queues), lane.pool],
                                     lane.concurrency)
                    queues.update(dict.fromkeys(lane.queues))
            families += [processed, failed, running, slots]
        stats = await self._transport.stats(list(queues))
        families += list(_depth_families(prom, stats))
        registry = prom.CollectorRegistry(auto_describe=False)
        registry.register(_Fixed(families))
        body: bytes = prom.generate_latest(registry)
        return body


class _Fixed:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]],
                    Callable[[MutableMapping[str, Any]], Awaitable[None]]], Awaitable[None]]


def fleet_metrics_app(hub: Hub, queues: Iterable[str] = ()) -> ASGIApp:
    """A small ASGI app that answers every GET with the fleet's metrics (mount it at
    ``/metrics``); a store that cannot be reached gives a 503 with one line.

    Raises:
        ConfigurationError: the ``metrics`` extra is not installed.
    """
    fleet = FleetMetrics(hub, queues)

    async def app(scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                  send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await fleet.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, content_type = 200, "text/plain; charset=utf-8"
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            status, body = 405, b"GET only\n"
        else:
            try:
                body, content_type = await fleet.render()
            except Exception as exc:
                log.warning("fleet metrics cannot be read: %r", exc)
                status, body = 503, f"metrics cannot be read: {type(exc).__name__}\n".encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    app.fleet = fleet  # type: ignore[attr-defined]  # the dashboard may close it itself
    return app
