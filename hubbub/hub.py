"""``Hub``: configuration, the task registry, and the wiring of broker and result store."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar, cast, overload

from hubbub._bridge import Bridge
from hubbub._client import Client, Connector, encode_all, revoke
from hubbub._redact import redact
from hubbub._registry import TaskDecorator, register_task, remote, unknown_task
from hubbub.canvas.builtins import add_builtins
from hubbub.canvas.send import send
from hubbub.canvas.signature import Canvas, Group, Signature, from_dict
from hubbub.codecs import Codec, get_codec, register_type
from hubbub.control.plane import MemoryPlane, Plane
from hubbub.errors import ConfigurationError
from hubbub.events import EventBus
from hubbub.message import Envelope
from hubbub.middleware import Middleware
from hubbub.result import Result
from hubbub.results import ResultBackend, ResultRecord, open_results
from hubbub.schedule.entries import ScheduleEntry, add_entry, make_entry, make_trigger
from hubbub.settings import Limits, Settings, resolve, sqlite_url
from hubbub.signing import Signer
from hubbub.task import Task, TaskOptions
from hubbub.transports import Transport, open_transport

P = ParamSpec("P")
R = TypeVar("R")


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
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        # The module file the default SQLite broker sits next to; None: the working directory.
        self.anchor: Path | None = _anchor(sys._getframe(1).f_globals)
        self.settings: Settings = resolve({
            "broker": broker, "results": results, "lease": lease, "serializer": serializer,
            "accept": None if accept is None else frozenset(accept), "result_ttl": result_ttl,
            "default_queue": default_queue, "limits": limits,
            "signing_keys": None if signing_keys is None else tuple(signing_keys.items()),
            "dead_letter_failures": dead_letter_failures,
        }, cli=overrides, defaults={
            "broker": sqlite_url(self.anchor.parent if self.anchor else Path.cwd())})
        self.codec: Codec = get_codec(self.settings.serializer)
        keys = dict(self.settings.signing_keys)
        self.signer: Signer | None = Signer(keys) if keys else None
        for name in self.settings.accept:
            if get_codec(name).trusted_only and self.signer is None:
                raise ConfigurationError(
                    f"serializer {name!r} runs code from the broker when decoding; it is only "
                    "allowed with signed messages: pass signing_keys={'k1': '<secret>'}"
                )
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, ScheduleEntry] = {}  # periodic tasks, by entry name
        self.middleware: list[Middleware] = list(middleware)
        self.events = EventBus()
        self.bridge = Bridge()
        self.import_path: str | None = None  # "module:attr" when loaded by the CLI
        # The producer's connections, on the bridge loop (see client()).
        self._connector = Connector(self.open_transport, self.open_results,
                                    self.settings.broker)

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
        **send: Any,
    ) -> Result[Any]:
        """Send a task by name, without importing its code.

        Takes the same keyword options as ``Task.apply_async``. A task registered here
        lends its defaults (queue, retries, ...); an unknown name uses the hub's defaults.
        The arguments are not checked here (the worker does), whether the name is known or not.
        """
        known = self.tasks.get(name)
        spec = known.spec if known is not None else TaskOptions(name=name)
        return Task(self, remote, spec).apply_async(args, kwargs, **send)

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
        self.bridge.run(self.publish_async(envelopes))
        return [self._result_for(e) for e in envelopes]

    def _result_for(self, envelope: Envelope) -> Result[Any]:
        task = self.tasks.get(envelope.task)
        ignored = self.settings.results is None or bool(task and task.spec.ignore_result)
        return Result(self, envelope.id, envelope.task, ignored=ignored,
                      raises=task.spec.raises if task else ())

    async def publish_async(self, envelopes: Sequence[Envelope]) -> None:
        """Encode and publish on the bridge loop (callable from any loop)."""
        if asyncio.get_running_loop() is not self.bridge.loop():
            return await self.bridge.run_async(self.publish_async(envelopes))
        client = await self.client()
        await client.transport.publish(await encode_all(
            envelopes, self.middleware, self.codec, self.max_message_size(client.transport),
            self.signer))

    def max_message_size(self, transport: Transport) -> int:
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
        return None if url is None else open_results(url)

    def open_plane(self) -> Plane:
        """A new, unconnected control plane (events, control commands and replies) over the
        broker.

        Raises:
            ConfigurationError: the broker carries no plane yet.
        """
        url = self.settings.broker
        if url.startswith("memory:"):
            return MemoryPlane(url.split("?", 1)[0])
        raise ConfigurationError(f"events and remote control are not available on "
                                 f"{url.split(':', 1)[0]}:// brokers yet")

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
