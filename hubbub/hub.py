"""``Hub``: configuration, the task registry, and the wiring of broker and result store."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar, cast, overload

from hubbub._bridge import Bridge
from hubbub._client import (
    Client,
    Connector,
    LoopClient,
    encode_all,
    encode_now,
    revoke,
    wraps_publish,
)
from hubbub._redact import redact
from hubbub._registry import TaskDecorator, register_task, remote, unknown_task
from hubbub._suggest import did_you_mean
from hubbub.canvas.builtins import add_builtins
from hubbub.canvas.send import send
from hubbub.canvas.signature import Canvas, Group, Signature, from_dict
from hubbub.codecs import Codec, get_codec, register_type
from hubbub.compat.celery.producer import DEFAULT_QUEUE as CELERY_QUEUE
from hubbub.compat.celery.producer import CeleryProducer, broker_url
from hubbub.control.client import Control
from hubbub.control.plane import Plane
from hubbub.control.planes import open_plane
from hubbub.control.sent import SentEvents
from hubbub.errors import ConfigurationError
from hubbub.events import EventBus
from hubbub.hooks import AroundTask, Hooks, ProcessHook, TaskCallback, TaskFailureCallback
from hubbub.limits import KeyFrom, parse_rate
from hubbub.limits.unique import UNIQUE_HEADER, claim, unclaim
from hubbub.message import Envelope
from hubbub.middleware import Middleware
from hubbub.result import Result
from hubbub.results import ResultBackend, ResultRecord, open_results
from hubbub.schedule.entries import ScheduleEntry, add_entry, make_entry, make_trigger
from hubbub.settings import Limits, Settings, resolve, sqlite_url
from hubbub.signing import Signer
from hubbub.task import SendOptions, Task, TaskOptions, build_envelope
from hubbub.tracing import SendTracing
from hubbub.transports import Transport, open_transport

P = ParamSpec("P")
R = TypeVar("R")
# Sends from one event loop (not the bridge's) after which it publishes on connections of
# its own instead of handing each send to the bridge thread.
OWN_CONNECTIONS_AFTER = 8


class Hub:
    """A task queue application: where tasks are registered and sent from.

    Args:
        broker: broker URL; default ``$HUBBUB_BROKER``, else the SQLite file ``hubbub.db``
            in the directory of the module that creates the Hub (the working directory in an
            interactive session), by its absolute path: a web process and a worker started
            from different folders use the same file (nothing to install).
        results: result store URL; default: the broker itself when it can keep results
            (sqlite, memory, redis), else none. ``"none"`` keeps no results.
        lease: seconds a delivery stays leased without renewal (default 30).
        serializer: codec for arguments: "json" (default), "msgpack", or "pickle" (only by
            explicit choice: unpickling runs code chosen by whoever can write to the broker).
        accept: content types a worker of this hub accepts (the serializer is always added).
        result_ttl: seconds results are kept (default one day).
        default_queue: queue for tasks that name none (default "default").
        limits: size and delivery-count limits.
        middleware: wrappers around publishing and dispatching, outermost first.
        signing_keys: key id -> shared secret (HMAC-SHA256), the signing key first; a worker
            with keys refuses unsigned or tampered messages. Required for pickle.
        dead_letter_failures: also dead-letter a task that ran and failed for good (by
            default it is a FAILURE result only; dead letters hold what could not run).
        events: publish events on the control plane (``hubbub events`` shows them): a
            ``task-sent`` for every task this hub sends, and every worker event from
            workers of this hub (``hubbub worker --events`` turns it on for one worker).
            Off by default; ``$HUBBUB_EVENTS=1`` turns it on.
        history: write the task history (the dashboard's task search and task pages: each
            task's state, times, masked argument preview, workflow links and attempts) with
            each result. On by default; ``$HUBBUB_HISTORY=off`` makes workers write none.
        celery_broker: Celery's broker, for ``send_task(..., protocol="celery")`` and the
            worker's ``--celery-queue`` (default: this broker when it is Redis or RabbitMQ).
        celery_results: Celery's Redis result backend, where the bridge also writes the
            results of the Celery tasks it runs (docs/celery.md).
        overrides: settings that win over everything else (the CLI passes its options here).

    Arguments given here win over the ``HUBBUB_*`` environment variables, which fill what the
    code leaves unset (``None``); ``settings.source(name)`` says where each came from.

    Raises:
        ConfigurationError: an unknown URL scheme, a missing extra, a bad setting.
    """

    def __init__(
        self,
        broker: str | None = None,
        *,
        results: str | None = None,
        lease: float | timedelta | None = None,
        serializer: str | None = None,
        accept: Iterable[str] | None = None,
        result_ttl: float | timedelta | None = None,
        default_queue: str | None = None,
        limits: Limits | None = None,
        middleware: Sequence[Middleware] = (),
        signing_keys: Mapping[str, str] | None = None,
        dead_letter_failures: bool | None = None,
        events: bool | None = None,
        history: bool | None = None,
        celery_broker: str | None = None,
        celery_results: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        # The module file the default SQLite broker sits next to; None: the working directory.
        self.anchor: Path | None = _anchor(sys._getframe(1).f_globals)
        self._code: dict[str, Any] = _code_settings(
            broker=broker, results=results, lease=lease, serializer=serializer, accept=accept,
            result_ttl=result_ttl, default_queue=default_queue, limits=limits,
            signing_keys=signing_keys, dead_letter_failures=dead_letter_failures,
            events=events, history=history, celery_broker=celery_broker,
            celery_results=celery_results)
        self._overrides = overrides
        self.events = EventBus()
        self._settle()
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, ScheduleEntry] = {}  # periodic tasks, by entry name
        self.middleware: list[Middleware] = list(middleware)
        self.hooks = Hooks()  # run in the process that runs the task (hubbub/hooks.py)
        # -- tracing (issue 15): send spans, once hubbub.tracing.instrument(hub) ran
        self.tracing: SendTracing | None = None
        self.bridge = Bridge()
        self._celery_producers: dict[int, CeleryProducer] = {}  # send_task(protocol="celery")
        self.import_path: str | None = None  # "module:attr" when loaded by the CLI
        # Producer connections opened on other event loops by connected() (ASGI apps).
        self._loop_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Client] = (
            weakref.WeakKeyDictionary())
        # ... and by publish_async itself, on a loop that keeps sending (issue #18).
        self._own_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopClient] = (
            weakref.WeakKeyDictionary())
        self._loop_sends: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = (
            weakref.WeakKeyDictionary())

    def _settle(self) -> None:
        """Resolve the settings and what is built from them (``__init__`` and ``configure``)."""
        settings = resolve(self._code, cli=self._overrides, defaults={
            "broker": sqlite_url(self.anchor.parent if self.anchor else Path.cwd())})
        codec = get_codec(settings.serializer)
        keys = dict(settings.signing_keys)
        signer = Signer(keys) if keys else None
        for name in settings.accept:
            if get_codec(name).trusted_only and signer is None:
                raise ConfigurationError(
                    f"serializer {name!r} runs code from the broker when decoding; it is only "
                    "allowed with signed messages: pass signing_keys={'k1': '<secret>'}"
                )
        self.settings: Settings = settings
        self.codec: Codec = codec
        self.signer: Signer | None = signer
        # The producer's connections, on the bridge loop (see client()).
        self._connector = Connector(self.open_transport, self.open_results, settings.broker)
        # task-sent events, with events on (on the bridge loop, like the connections)
        self._sent = SentEvents(self.events, self.open_plane) if settings.events else None

    def configure(self, **settings: Any) -> None:
        """Change settings given in code, before the hub is used: for an app whose
        configuration is known only after its tasks are declared (a Flask app factory).

        Takes the keyword arguments of ``Hub(...)`` (``broker``, ``results``, ``lease``,
        ...); ``None`` leaves a setting as it was. The CLI's options still win, and the
        environment still fills what no code sets.

        Raises:
            ConfigurationError: the hub has already connected (sent or read something), or an
                unknown or invalid setting.
        """
        if self._connector.opened:
            raise ConfigurationError("configure() must come before the hub sends or reads "
                                     "anything: call it (or init_app) at start-up")
        unknown = set(settings) - set(self._code)
        for name in sorted(unknown):
            raise ConfigurationError(f"unknown setting {name!r}{did_you_mean(name, self._code)}")
        code = dict(self._code)
        code.update({k: v for k, v in _code_settings(**settings).items() if v is not None})
        previous = self._code
        self._code = code
        try:
            self._settle()
        except BaseException:
            self._code = previous
            raise

    def __repr__(self) -> str:
        return f"<Hub broker={redact(self.settings.broker)}>"

    # -- registering tasks -------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, fn: None = None, /, *, name: str | None = None, queue: str | None = None,
        priority: int = 0, retries: int = 0, retry_backoff: float = 1.0,
        retry_backoff_max: float = 600.0, retry_jitter: bool = True,
        retry_for: tuple[type[BaseException], ...] = (), timeout: float | None = None,
        soft_timeout: float | None = None, expires: float | None = None,
        ignore_result: bool = False, on_crash: Literal["fail", "retry"] = "fail",
        raises: tuple[type[Exception], ...] = (),
        unique: KeyFrom | None = None, unique_for: float | None = None,
        rate_limit: str | None = None, concurrency: int | None = None,
        concurrency_key: KeyFrom | None = None, rate_limit_key: KeyFrom | None = None,
    ) -> TaskDecorator: ...

    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Register a function (plain or ``async def``) as a task.

        Use bare (``@hub.task``) or with options (``@hub.task(queue="mail", retries=5)``);
        see :class:`~hubbub.task.TaskOptions` for every option.

        Raises:
            ConfigurationError: an unknown or invalid option, or a name already taken.
        """

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            task = register_task(self, self.tasks, func, options)
            add_builtins(self, self.tasks)  # -- canvas: hubbub.starmap (task.map, chunks)
            return task

        return register if fn is None else register(fn)

    # -- hooks in the process that runs the task (issue 16; semantics in hubbub/hooks.py) --

    def on_process_start(self, fn: ProcessHook) -> ProcessHook:
        """Run ``fn()`` once in every process that runs tasks (each prefork, hybrid or gevent
        child; the worker itself for solo, threads, async), before its first task. If it
        raises, the worker does not start.

        Raises:
            ConfigurationError: ``fn`` is ``async def`` (so are the other hook decorators).
        """
        return self.hooks.add("on_process_start", fn)

    def on_process_stop(self, fn: ProcessHook) -> ProcessHook:
        """Run ``fn()`` when such a process stops serving (last registered first)."""
        return self.hooks.add("on_process_stop", fn)

    def around_task(self, factory: AroundTask) -> AroundTask:
        """Enter ``factory(ctx)``, a context manager (or, for ``async def`` tasks, an async
        one), around every task, in the thread or coroutine that runs it (first registered
        outermost); an error fails that task."""
        return self.hooks.add("around_task", factory)

    def before_task(self, fn: TaskCallback) -> TaskCallback:
        """Call ``fn(ctx)`` just before every task (Celery's ``task_prerun``); an error
        fails that task."""
        return self.hooks.add("before_task", fn)

    def after_task(self, fn: TaskCallback) -> TaskCallback:
        """Call ``fn(ctx)`` after every task, success or failure (``task_postrun``)."""
        return self.hooks.add("after_task", fn)

    def on_task_failure(self, fn: TaskFailureCallback) -> TaskFailureCallback:
        """Call ``fn(ctx, exc)`` when a task raises, but not ``Retry``/``Reject``
        (``task_failure``)."""
        return self.hooks.add("on_task_failure", fn)

    # -- periodic tasks ------------------------------------------------------------------

    def schedule(
        self, task: Task[Any, Any] | str, *, cron: str | None = None,
        every: float | timedelta | None = None, tz: str | None = None,
        args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
        name: str | None = None, missed: Literal["once", "skip"] = "once",
        queue: str | None = None, priority: int | None = None,
        expires: float | timedelta | None = None, remote: bool = False,
    ) -> ScheduleEntry:
        """Run a task periodically: ``hub.schedule(cleanup, cron="*/5 * * * *")``.

        A beat (``hubbub beat``) sends it at each slot; see ``docs/scheduling.md``.

        Args:
            task: the task, or the name of a task registered on this hub (or, with
                ``remote=True``, of one that only workers elsewhere know).
            cron: a cron expression (needs ``hubbub[schedule]``); or
            every: seconds (or a timedelta) between runs, anchored at the Unix epoch.
            tz: IANA time zone of ``cron`` (default UTC).
            args: positional arguments of every run.
            kwargs: keyword arguments of every run.
            name: the entry's unique name (default: the task's name).
            missed: slots missed by more than the beat's grace: ``"once"`` runs once for
                all of them, ``"skip"`` waits for the next slot.
            queue: queue to send to (default: the task's).
            priority: 0..9 (default: the task's).
            expires: seconds after its slot when a run is no longer worth starting.
            remote: the task is registered elsewhere (another service's workers), so a name
                this hub does not know is expected; it is sent with the hub's defaults.

        Returns:
            The entry, also kept in ``hub.schedules``.

        Raises:
            ScheduleError: a bad schedule, time zone or option, a name already taken, or a
                task name this hub does not know (with the closest registered name) without
                ``remote=True``.
            ConfigurationError: ``cron`` without croniter installed.
        """
        if isinstance(task, str) and not remote and task not in self.tasks:
            raise unknown_task(self.tasks, task)
        trigger = make_trigger(cron=cron, every=every, tz=tz)
        entry = make_entry(task if isinstance(task, str) else task.name, trigger, name=name,
                           args=tuple(args), kwargs=kwargs, missed=missed, queue=queue,
                           priority=priority, expires=expires)
        return add_entry(self.schedules, entry)

    def periodic(
        self, *, cron: str | None = None, every: float | timedelta | None = None,
        tz: str | None = None, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
        missed: Literal["once", "skip"] = "once", **options: Any,
    ) -> TaskDecorator:
        """Register a function as a task and schedule it: ``@hub.periodic(every=30)``.

        Takes the schedule of :meth:`schedule` and the task options of :meth:`task`; the
        entry is named after the task.

        Raises:
            ScheduleError: a bad schedule or time zone.
            ConfigurationError: an unknown task option, or ``cron`` without croniter.
        """
        trigger = make_trigger(cron=cron, every=every, tz=tz)
        make_entry("?", trigger, missed=missed)  # fail before anything is registered

        def register(fn: Callable[..., Any]) -> Task[Any, Any]:
            task: Task[Any, Any] = self.task(**options)(fn)
            entry = make_entry(task.name, trigger, args=tuple(args), kwargs=kwargs,
                               missed=missed)
            add_entry(self.schedules, entry)
            return task

        return cast("TaskDecorator", register)

    # -- sending -------------------------------------------------------------------------

    def send_task(
        self, name: str, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
        *, protocol: Literal["hubbub", "celery"] = "hubbub", **send: Any,
    ) -> Result[Any]:
        """Send a task by name, without importing its code.

        Takes the same keyword options as ``Task.apply_async``. A task registered here
        lends its defaults (queue, retries, ...); an unknown name uses the hub's defaults.
        The arguments are not checked here (the worker does), whether the name is known or not.

        With ``protocol="celery"`` the task goes to a Celery worker instead: a Celery protocol
        v2 message on Celery's broker (the ``celery_broker`` setting, else this hub's broker
        when it is Redis or RabbitMQ), on Celery's queue ``queue`` (default ``"celery"``).
        Celery keeps its result, so the returned handle keeps none: read it with Celery's
        ``AsyncResult(result.id)``.

        Raises:
            ConfigurationError: bad options, or no Redis or RabbitMQ broker for Celery.
            MessageError: an argument cannot be encoded.
            TransportUnavailable: the broker cannot be reached.
        """
        known = self.tasks.get(name)
        spec = known.spec if known is not None else TaskOptions(name=name)
        if protocol == "celery":  # -- Celery bridge (issue 17)
            envelope = build_envelope(replace(spec, queue=None), CELERY_QUEUE, tuple(args),
                                      kwargs or {}, SendOptions(**send))
            self.bridge.run(self._celery_send(envelope))
            return Result(self, envelope.id, name, ignored=True)
        if protocol != "hubbub":
            raise ConfigurationError(f"protocol must be 'hubbub' or 'celery', not {protocol!r}")
        return Task(self, remote, spec).apply_async(args, kwargs, **send)

    async def _celery_send(self, envelope: Envelope) -> None:
        # One producer per process, on the bridge loop (a forked child opens its own).
        producer = self._celery_producers.get(os.getpid())
        if producer is None:
            producer = CeleryProducer(broker_url(self.settings), origin=f"hubbub@{os.getpid()}")
            self._celery_producers = {os.getpid(): producer}
        await producer.send(envelope)

    def publish(self, envelopes: Sequence[Envelope]) -> list[Result[Any]]:
        """Encode and publish envelopes in one batch, from sync code.

        This is what a ``Task`` sends through (the ``Publisher`` protocol in task.py).

        Args:
            envelopes: built by ``hubbub.task.build_envelope``; each goes to its own queue.

        Returns:
            One Result per envelope, in order.

        Raises:
            MessageError: an envelope cannot be encoded, or is larger than the limit.
            TransportUnavailable: the broker cannot be reached; nothing may be assumed sent.
        """
        if self.tracing is not None:  # -- tracing (issue 15): in the caller's thread
            with self.tracing.sending(envelopes) as traced:
                owners = self._publish_sync(traced)
        else:
            owners = self._publish_sync(envelopes)
        return [self._result_for(replace(e, id=owners[e.id]) if e.id in owners else e)
                for e in envelopes]

    def _publish_sync(self, envelopes: Sequence[Envelope]) -> dict[str, str]:
        """``publish_async``'s work from sync code: on the caller's thread when the broker
        has a sync publisher (SQLite, one Redis server) and nothing needs an event loop (no
        ``around_publish`` middleware, no unique job), else through the bridge loop.

        Returns:
            As ``publish_async``: the unique envelopes not sent, each with its owner's id.
        """
        client = self._connector.current() or self.bridge.run(self.client())
        direct = client.transport.sync_publisher()
        if (direct is None or wraps_publish(self.middleware)
                or any(UNIQUE_HEADER in e.headers for e in envelopes)):
            return self.bridge.run(self.publish_async(envelopes))
        direct.publish(encode_now(envelopes, self.codec,
                                  self.max_message_size(client.transport), self.signer))
        if self._sent is not None:  # task-sent events stay on the bridge loop, after the send
            self.bridge.run(self._sent.sent(envelopes))
        return {}

    def _result_for(self, envelope: Envelope) -> Result[Any]:
        task = self.tasks.get(envelope.task)
        ignored = self.settings.results is None or bool(task and task.spec.ignore_result)
        return Result(self, envelope.id, envelope.task, ignored=ignored,
                      raises=task.spec.raises if task else ())

    async def publish_async(self, envelopes: Sequence[Envelope]) -> dict[str, str]:
        """Encode and publish from any loop: on this loop's own connections inside
        ``connected()`` or once it has sent ``OWN_CONNECTIONS_AFTER`` times, else on the
        bridge loop.

        Returns:
            The unique envelopes that were not sent because another live job holds their
            key: envelope id -> that job's id (see docs/limits.md).
        """
        loop = asyncio.get_running_loop()
        client = self._loop_clients.get(loop) or await self._own_client(loop)
        if client is None:
            if loop is not self.bridge.loop():
                return await self.bridge.run_async(self.publish_async(envelopes))
            client = await self.client()
        # -- limits: unique jobs claim their keys first --
        envelopes, owners, claimed = await claim(client.results, envelopes,
                                                 self.settings.broker)
        try:
            if not envelopes:
                return owners  # every one a duplicate of a live job
            await client.transport.publish(await encode_all(
                envelopes, self.middleware, self.codec, self.max_message_size(client.transport),
                self.signer))
        except BaseException:
            await unclaim(client.results, claimed)
            raise
        if self._sent is not None:  # its plane lives on the bridge loop, whoever sent
            await self.bridge.run_async(self._sent.sent(envelopes))
        return owners

    async def _own_client(self, loop: asyncio.AbstractEventLoop) -> Client | None:
        """Connections of ``loop``'s own, once it has sent ``OWN_CONNECTIONS_AFTER`` times
        (a server's or a worker's loop; a loop of one ``asyncio.run`` that sends once or
        twice keeps using the bridge's, already open); None before that, and on the bridge
        loop. They close when the loop shuts down (see ``LoopClient``).

        Raises:
            TransportUnavailable: the broker cannot be reached.
        """
        owned = self._own_clients.get(loop)
        if owned is None:
            if self.bridge.runs(loop):
                return None
            sends = self._loop_sends.get(loop, 0) + 1
            self._loop_sends[loop] = sends
            if sends < OWN_CONNECTIONS_AFTER:
                return None
            owned = self._own_clients[loop] = LoopClient(Connector(
                self.open_transport, self.open_results, self.settings.broker))
        return await owned.client()

    async def send_async(self, envelopes: Sequence[Envelope]) -> list[Result[Any]]:
        """``publish`` for async code (what ``Task.delay_async`` sends through).

        Raises:
            MessageError: an envelope cannot be encoded, or is larger than the limit.
            TransportUnavailable: the broker cannot be reached; nothing may be assumed sent.
        """
        if self.tracing is not None:  # -- tracing (issue 15): in the caller's task
            with self.tracing.sending(envelopes) as traced:
                owners = await self.publish_async(traced)
        else:  # -- limits: a duplicate's is the owner's
            owners = await self.publish_async(envelopes)
        return [self._result_for(replace(e, id=owners[e.id]) if e.id in owners else e)
                for e in envelopes]

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[Hub]:
        """Open producer connections on the running event loop for the block.

        Inside it, sends from this loop (``await task.delay_async(...)``,
        ``hub.send_async``) go to the broker from the loop itself, with no hop to the hub's
        bridge thread per call. For an ASGI app's lifespan (``hubbub.fastapi.lifespan``);
        entering it again on the same loop reuses the connections.

        Raises:
            TransportUnavailable: the broker cannot be reached.
        """
        loop = asyncio.get_running_loop()
        if loop in self._loop_clients:
            yield self
            return
        connector = Connector(self.open_transport, self.open_results, self.settings.broker)
        self._loop_clients[loop] = await connector.client()
        try:
            yield self
        finally:
            client = self._loop_clients.pop(loop)
            await client.close()

    def max_message_size(self, transport: Transport) -> int:
        """Bytes a message may have on ``transport``: ``limits.max_message_size``, lowered to
        the broker's own cap where it has one."""
        cap = transport.capabilities.max_message_size
        limit = self.settings.limits.max_message_size
        return limit if cap is None else min(limit, cap)

    # -- connections -----------------------------------------------------------------------

    def open_transport(self) -> Transport:
        """A new, unconnected transport for the broker (one per event loop), keeping dead
        letters as ``limits`` says (a URL's ``dead_ttl``/``dead_max`` win)."""
        limits = self.settings.limits
        return open_transport(self.settings.broker, dead_ttl=limits.dead_letter_ttl,
                              dead_max=limits.max_dead_letters)

    def open_results(self) -> ResultBackend | None:
        """A new, unconnected result backend, or None when results are not kept."""
        url = self.settings.results
        if url is None:
            return None
        backend = open_results(url)
        if not self.settings.history:  # -- history: off, so no rows are written or read
            backend.history_ttl = None
        return backend

    def open_plane(self) -> Plane:
        """A new, unconnected control plane (events, control commands and replies) over the
        broker: Redis streams, RabbitMQ fanout exchanges, a table in the SQLite file; on
        Beanstalkd, the result store (Redis or SQLite).

        Raises:
            ConfigurationError: the broker carries no plane (Beanstalkd without a Redis or
                SQLite result store), or its extra is missing.
        """
        return open_plane(self.settings.broker, self.settings.results)

    @functools.cached_property
    def control(self) -> Control:
        """Remote control of this hub's workers: ``hub.control.ping()``,
        ``hub.control.inspect().active()``, ``hub.control.shutdown(destination=["w1"])``
        (see :class:`~hubbub.control.client.Control`)."""
        return Control(self)

    async def client(self) -> Client:
        """This process's producer connections (on the bridge loop), opened on first use."""
        return await self._connector.client()

    # -- results ---------------------------------------------------------------------------
    #
    # Public: they are what a Result is built on (the ResultsClient protocol in result.py),
    # and the async, batched way to read many results in one round trip, which a Result
    # (one id, sync or async) cannot offer; the demo, the benchmarks and the tests use them.
    # Like everything that uses the producer connections, they run on the hub's bridge loop.

    async def read_results(self, ids: Sequence[str]) -> dict[str, ResultRecord]:
        """The stored records of ``ids``, in one round trip.

        A coroutine for the hub's bridge loop: ``hub.bridge.run(hub.read_results(ids))``
        from sync code, ``await hub.bridge.run_async(hub.read_results(ids))`` from a loop.

        Args:
            ids: task ids.

        Returns:
            id -> record, for the ids that have a record (none yet, or expired: left out).

        Raises:
            ResultError: this hub keeps no results, or the store failed.
            ResultUnavailable: a networked store (Redis) cannot be reached.
            TransportUnavailable: the broker cannot be reached (the first call connects both).
        """
        return await (await self._connector.results()).get(ids)

    async def wait_result(self, id: str, timeout: float | None) -> ResultRecord | None:
        """Wait until task ``id`` is ready (SUCCESS, FAILURE or REVOKED); on the bridge loop.

        Args:
            id: the task id.
            timeout: seconds to wait; None waits as long as it takes.

        Returns:
            The ready record, or None when ``timeout`` ran out first.

        Raises:
            ResultError: this hub keeps no results, or the store failed.
            ResultUnavailable: a networked store (Redis) cannot be reached.
            TransportUnavailable: the broker cannot be reached (the first call connects both).
        """
        return await (await self._connector.results()).wait(id, timeout=timeout)

    async def revoke(self, ids: Sequence[str], *, terminate: bool = False) -> list[str]:
        """Revoke tasks, in one call however many; on the bridge loop.

        A revoked task that has not started never starts: a worker skips it when it fetches
        it, and drops it if it was already waiting for a slot (within about half a second).
        A running task is stopped only with ``terminate=True`` (see docs/tasks.md for how
        each pool stops one); otherwise it runs to the end. A task that already finished
        keeps its result, and so does one that finishes before a terminate reaches it.

        Args:
            ids: task ids.
            terminate: also stop the tasks among ``ids`` that are running now.

        Returns:
            The ids the revoke took effect for: not finished, and not running unless
            ``terminate``.

        Raises:
            ResultError: this hub keeps no results (revokes live there), or the store failed.
            ResultUnavailable: a networked store (Redis) cannot be reached.
            TransportUnavailable: the broker cannot be reached (the first call connects both).
        """
        return await revoke(await self._connector.results(), ids, terminate=terminate,
                            ttl=self.settings.result_ttl)

    async def forget_results(self, ids: Sequence[str]) -> None:
        """Delete the stored records of ``ids`` (a missing one is no error); on the bridge loop.

        Args:
            ids: task ids.

        Raises:
            ResultError: this hub keeps no results, or the store failed.
            ResultUnavailable: a networked store (Redis) cannot be reached.
            TransportUnavailable: the broker cannot be reached (the first call connects both).
        """
        await (await self._connector.results()).forget(ids)

    # -- limits ------------------------------------------------------------------------------

    async def set_rate_limit(self, task: str, rate: str | None) -> None:
        """Change ``task``'s rate limit for the whole fleet, now; on the bridge loop.

        Kept in the result store, where every worker reads it (within about two seconds);
        it wins over the task's ``rate_limit`` option, and also limits a task that has none.

        Args:
            task: the task's name.
            rate: ``"100/m"`` (also ``/s``, ``/h``); None goes back to the task's option.

        Raises:
            ConfigurationError: ``rate`` is not a rate.
            ResultError: this hub keeps no results (limits live there), or the store failed.
            ResultUnavailable: a networked store (Redis) cannot be reached.
        """
        if rate is not None:
            rate = parse_rate(rate).text
        await (await self._connector.results()).limits().set_rate(task, rate)

    # -- canvas ----------------------------------------------------------------------------

    @overload
    def signature(self, task: str, args: Iterable[Any] = (),
                  kwargs: Mapping[str, Any] | None = None,
                  options: Mapping[str, Any] | None = None, *, immutable: bool = False,
                  known: Task[Any, R] | None = None) -> Signature[R]: ...

    @overload
    def signature(self, task: Mapping[str, Any]) -> Canvas[Any]: ...

    def signature(self, task: str | Mapping[str, Any], args: Iterable[Any] = (),
                  kwargs: Mapping[str, Any] | None = None,
                  options: Mapping[str, Any] | None = None, *, immutable: bool = False,
                  known: Task[Any, R] | None = None) -> Canvas[Any]:
        """A signature of a task by name (``hub.signature("shop.charge", args=[42])``), or
        a canvas from its plain data (``hub.signature(sig.to_dict())``).

        Args:
            task: the task's name (it may be registered only on the workers), or a dict
                made by ``to_dict()`` of any canvas element.
            args: positional arguments.
            kwargs: keyword arguments.
            options: send options: ``queue``, ``priority``, ``countdown``, ``expires``,
                ``task_id``.
            immutable: ignore a parent's value (as ``task.si``).
            known: the Task, when the caller has it (its arguments are checked at send).

        Raises:
            ConfigurationError: an unknown option, or data that is not a canvas.
        """
        if isinstance(task, Mapping):
            return from_dict(self, task)
        return Signature(self, task, args, kwargs, options, immutable=immutable, known=known)

    def group(self, members: Iterable[Canvas[Any]]) -> Group:
        """A group of canvas elements sent through this hub (as ``hubbub.group``)."""
        return Group(self, members)

    def send_canvas(self, element: Canvas[Any]) -> Any:
        """Freeze and send a canvas element (what ``sig.delay()`` calls); see
        :func:`hubbub.canvas.send.send` for what it raises."""
        return send(self, element)

    async def save_groups(self, groups: Sequence[tuple[str, list[str]]]) -> None:
        """Keep each group's member ids in the result store; on the bridge loop.

        Raises:
            ResultError: this hub keeps no results, or the store failed.
            ResultUnavailable: a networked store cannot be reached.
        """
        store = await self._connector.results()
        for group, ids in groups:
            await store.save_group(group, ids, ttl=self.settings.result_ttl)

    async def read_group(self, id: str) -> list[str] | None:
        """The member ids saved for group ``id``; on the bridge loop.

        Raises:
            ResultError: this hub keeps no results, or the store failed.
            ResultUnavailable: a networked store cannot be reached.
        """
        return await (await self._connector.results()).read_group(id)

    def close(self) -> None:
        """Close the producer connections and stop the bridge thread."""
        client = self._connector.detach()
        if client is not None:
            self.bridge.run(client.close())
        if self._sent is not None and self._sent.opened:
            self.bridge.run(self._sent.close())
        celery = self._celery_producers.pop(os.getpid(), None)
        if celery is not None:
            self.bridge.run(celery.close())
        self.bridge.stop()

    def register_type(self, cls: type[R], *, name: str | None = None,
                      encode: Callable[[R], Any], decode: Callable[[Any], R]) -> None:
        """Let values of ``cls`` travel in task arguments and results, on every codec.

        ``encode`` turns a value into something JSON can hold (it may itself hold types
        hubbub carries: datetimes, tuples, other registered types); ``decode`` turns that
        back. The producer and its workers must register the same types, which they do when
        both import the app. The registry is per process (result stores decode without a
        hub), so every hub in the process shares it. A message only ever names a registered
        type; nothing is imported by a name read from a message.

        Args:
            cls: the class; its subclasses travel as it, unless registered themselves.
            name: the tag written in messages and results, stable across releases of the
                app (default ``"module.QualName"`` of ``cls``).
            encode: value -> JSON-able value.
            decode: JSON-able value -> value.

        Raises:
            ConfigurationError: ``name`` is taken by another class or a built-in type,
                ``cls`` is already registered under another name, or ``cls`` already
                travels without registering (str, dict, datetime, ...).
        """
        register_type(cls, name=name or f"{cls.__module__}.{cls.__qualname__}",
                      encode=encode, decode=decode)


def _code_settings(**given: Any) -> dict[str, Any]:
    """The settings ``Hub(...)`` takes, as ``resolve`` reads them (``None``: not given)."""
    accept, keys = given.get("accept"), given.get("signing_keys")
    names = ("broker", "results", "lease", "serializer", "accept", "result_ttl",
             "default_queue", "limits", "signing_keys", "dead_letter_failures", "events",
             "history", "celery_broker", "celery_results")
    code = {name: given.get(name) for name in names}
    code["accept"] = None if accept is None else frozenset(accept)
    code["signing_keys"] = None if keys is None else tuple(dict(keys).items())
    return code


def _anchor(caller: Mapping[str, Any]) -> Path | None:
    """The file the default SQLite broker sits next to: the module that creates the Hub.

    None for a hub made in an interactive session, by ``python -c``, or by hubbub itself
    (the CLI without ``--app``): the working directory stands in for it.
    """
    module = str(caller.get("__name__") or "")
    path = caller.get("__file__")
    if not isinstance(path, str) or module == "hubbub" or module.startswith("hubbub."):
        return None
    return Path(path).resolve()
