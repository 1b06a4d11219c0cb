"""``Hub``: configuration, the task registry, and the wiring of broker and result store."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, cast, overload

from hubbub._client import Connector
from hubbub._producer import Producer
from hubbub._redact import redact
from hubbub._registry import TaskDecorator, register_task, remote, unknown_task
from hubbub._suggest import did_you_mean
from hubbub.canvas.builtins import add_builtins
from hubbub.canvas.send import send
from hubbub.canvas.signature import Canvas, Group, Signature, from_dict
from hubbub.codecs import Codec, get_codec, register_type
from hubbub.errors import ConfigurationError
from hubbub.events import EventBus
from hubbub.hooks import AroundTask, Hooks, ProcessHook, TaskCallback, TaskFailureCallback
from hubbub.limits import KeyFrom
from hubbub.middleware import Middleware
from hubbub.result import Result
from hubbub.settings import Limits, Settings, resolve, sqlite_url
from hubbub.signing import Signer
from hubbub.task import SendOptions, Task, TaskOptions, build_envelope

if TYPE_CHECKING:
    # Imported where used: a worker never needs the control client or the schedule entries
    # (with croniter's hook), and every worker imports this module (issue #18).
    from hubbub.control.client import Control
    from hubbub.schedule.entries import ScheduleEntry

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["Hub"]


class Hub(Producer):
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
        super().__init__()  # the producer's connections (hubbub/_producer.py)
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
        self.import_path: str | None = None  # "module:attr" when loaded by the CLI

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
        # task-sent events, with events on: the bridge loop's (each other loop that sends
        # has its own, see Producer._loop_client)
        self._sent = None
        if settings.events:
            from hubbub.control.sent import SentEvents  # only with events on (issue #18)

            self._sent = SentEvents(self.events, self.open_plane)

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
        if self._connector.opened or self._loops_connected:
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
        from hubbub.schedule.entries import add_entry, make_entry, make_trigger

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
        from hubbub.schedule.entries import add_entry, make_entry, make_trigger

        trigger = make_trigger(cron=cron, every=every, tz=tz)
        make_entry("?", trigger, missed=missed)  # fail before anything is registered

        def register(fn: Callable[..., Any]) -> Task[Any, Any]:
            task: Task[Any, Any] = self.task(**options)(fn)
            entry = make_entry(task.name, trigger, args=tuple(args), kwargs=kwargs,
                               missed=missed)
            add_entry(self.schedules, entry)
            return task

        return cast("TaskDecorator", register)

    @functools.cached_property
    def control(self) -> Control:
        """Remote control of this hub's workers: ``hub.control.ping()``,
        ``hub.control.inspect().active()``, ``hub.control.shutdown(destination=["w1"])``
        (see :class:`~hubbub.control.client.Control`)."""
        from hubbub.control.client import Control

        return Control(self)


    # -- sending by name --------------------------------------------------------------

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
        if protocol == "celery":  # -- Celery bridge (issue 17), imported when used
            from hubbub.compat.celery.producer import DEFAULT_QUEUE as CELERY_QUEUE

            envelope = build_envelope(replace(spec, queue=None), CELERY_QUEUE, tuple(args),
                                      kwargs or {}, SendOptions(**send))
            self.bridge.run(self._celery_send(envelope))
            return Result(self, envelope.id, name, ignored=True)
        if protocol != "hubbub":
            raise ConfigurationError(f"protocol must be 'hubbub' or 'celery', not {protocol!r}")
        return Task(self, remote, spec).apply_async(args, kwargs, **send)

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
        if not isinstance(task, str) and isinstance(task, Mapping):  # str first: the usual
            return from_dict(self, task)
        return Signature(self, task, args, kwargs, options, immutable=immutable, known=known)

    def group(self, members: Iterable[Canvas[Any]]) -> Group:
        """A group of canvas elements sent through this hub (as ``hubbub.group``)."""
        return Group(self, members)

    def send_canvas(self, element: Canvas[Any]) -> Any:
        """Freeze and send a canvas element (what ``sig.delay()`` calls); see
        :func:`hubbub.canvas.send.send` for what it raises."""
        return send(self, element)

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

