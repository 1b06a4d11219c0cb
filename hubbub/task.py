"""Tasks: functions (plain or ``async def``) that can be sent to workers."""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, Protocol, TypeVar

from hubbub._suggest import did_you_mean
from hubbub.context import maybe_current_task
from hubbub.errors import ConfigurationError
from hubbub.hooks import Hooks
from hubbub.limits.keys import KeyFrom
from hubbub.limits.options import check_limit_options
from hubbub.limits.unique import with_unique
from hubbub.message import Envelope, new_id
from hubbub.settings import Settings, seconds

if TYPE_CHECKING:
    from hubbub.canvas.signature import Canvas, Group, Signature
    from hubbub.result import Result
    from hubbub.worker.eager import EagerResult

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How a task is sent and run. Every field can be given to ``@hub.task(...)``.

    Attributes:
        name: the name workers know it by (default: ``module.function``).
        queue: where it is sent (default: the hub's default queue).
        priority: 0..9, higher runs first.
        retries: how many times it may be retried after the first attempt.
        retry_backoff: first retry delay in seconds; doubles each retry (with jitter).
        retry_backoff_max: the longest retry delay.
        retry_jitter: randomise each delay between half and all of it.
        retry_for: exception types that are retried (default: any Exception, while
            ``retries`` allow).
        timeout: hard time limit in seconds (exact on process pools, best effort elsewhere).
        soft_timeout: seconds after which SoftTimeLimitExceeded is raised inside the task.
        expires: seconds after sending when the task is no longer worth running.
        ignore_result: keep no result (faster; Result.get() is then refused).
        on_crash: when the process running it dies: "fail" it, or "retry" it.
        raises: the app's exception classes the task may raise that callers want to catch:
            ``Result.get()`` then raises a ``TaskFailed`` that is also an instance of the one
            raised (builtin exceptions such as ValueError need no declaring).
        unique: makes a job unique by a key derived from its arguments: parameter names
            (``unique=("order_id",)``) or a function of the task's arguments returning a str.
            While a job with that key is queued or running, sending another returns its
            Result. Needs a result store. See docs/limits.md.
        unique_for: seconds a unique key is kept at most (default one hour).
        rate_limit: ``"100/m"`` (also ``/s``, ``/h``): starts allowed across the whole fleet,
            spread evenly; a task over it waits without a pool slot.
        rate_limit_key: makes ``rate_limit`` per key, derived from the arguments like
            ``unique`` (e.g. ``"10/s"`` for each customer).
        concurrency: at most this many running at once across the whole fleet.
        concurrency_key: makes ``concurrency`` per key, derived from the arguments like
            ``unique`` (e.g. per customer).
    """

    name: str
    queue: str | None = None
    priority: int = 0
    retries: int = 0
    retry_backoff: float = 1.0
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    retry_for: tuple[type[BaseException], ...] = ()
    timeout: float | None = None
    soft_timeout: float | None = None
    expires: float | None = None
    ignore_result: bool = False
    on_crash: Literal["fail", "retry"] = "fail"
    raises: tuple[type[Exception], ...] = ()
    # -- limits (hubbub.limits) --
    unique: KeyFrom | None = None
    unique_for: float | None = None
    rate_limit: str | None = None
    concurrency: int | None = None
    concurrency_key: KeyFrom | None = None
    rate_limit_key: KeyFrom | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= 9:
            raise ConfigurationError(f"priority must be 0..9, got {self.priority}")
        if self.retries < 0:
            raise ConfigurationError(f"retries must not be negative, got {self.retries}")
        for name in ("timeout", "soft_timeout", "expires", "retry_backoff", "retry_backoff_max"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, seconds(value, name))
        if (self.soft_timeout is not None and self.timeout is not None
                and self.soft_timeout >= self.timeout):
            raise ConfigurationError(
                f"soft_timeout ({self.soft_timeout}s) must be shorter than timeout "
                f"({self.timeout}s): the soft limit warns the task before the hard one stops it"
            )
        if self.on_crash not in ("fail", "retry"):
            raise ConfigurationError(f"on_crash must be 'fail' or 'retry', not {self.on_crash!r}")
        raises = self.raises if isinstance(self.raises, tuple | list) else (self.raises,)
        for cls in raises:
            if not (isinstance(cls, type) and issubclass(cls, Exception)):
                raise ConfigurationError(f"raises takes Exception subclasses, e.g. "
                                         f"raises=(OrderError,), not {cls!r}")
        object.__setattr__(self, "raises", tuple(raises))
        # -- limits --
        for name, value in check_limit_options(
                unique=self.unique, unique_for=self.unique_for, rate_limit=self.rate_limit,
                concurrency=self.concurrency, concurrency_key=self.concurrency_key,
                rate_limit_key=self.rate_limit_key).items():
            object.__setattr__(self, name, value)


# Celery's task options, and what to write instead: a team moving over gets the answer, not
# a bare "unknown option".
CELERY_OPTIONS = {
    "bind": "hubbub tasks take no self: call hubbub.current_task() inside the task for its "
            "id, retries and queue",
    "max_retries": "hubbub calls it retries",
    "autoretry_for": "hubbub calls it retry_for (with retries=N); it defaults to any Exception",
    "time_limit": "hubbub calls it timeout (seconds)",
    "soft_time_limit": "hubbub calls it soft_timeout (seconds)",
    "acks_late": "it is always on in hubbub: a message is acked only after its task finished",
    "track_started": "it is always on in hubbub: a task is recorded STARTED when it starts",
    "default_retry_delay": "hubbub calls it retry_backoff (seconds, doubled each retry)",
    "serializer": "the serializer is a Hub setting: Hub(serializer=...)",
}


def unknown_option(name: str, known: Iterable[str]) -> ConfigurationError:
    """The error for an unknown task option: Celery's names get what hubbub calls them."""
    hint = CELERY_OPTIONS.get(name)
    if hint:
        return ConfigurationError(f"unknown task option {name!r}: that is Celery's; {hint}")
    return ConfigurationError(f"unknown task option {name!r}{did_you_mean(name, known)}")


def module_name(module: str) -> str:
    """The name workers know a module by. A script run as ``python shop.py`` is
    ``__main__`` to itself but ``shop`` to a worker started with ``-A shop:hub``: use the
    latter."""
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)  # python -m package.module
    path = getattr(main, "__file__", None)
    return Path(path).stem if path else module


def declared_name(cls: type[BaseException]) -> str:
    """``shop.OrderError``: the name a declared exception class is recorded under (the
    same in the caller's process and in the worker's)."""
    return f"{module_name(cls.__module__)}.{cls.__qualname__}"


def utc_instant(value: datetime, name: str) -> float:
    """Epoch seconds of an aware datetime.

    Raises:
        ConfigurationError: the datetime is naive.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(
            f"{name} must be timezone-aware; use datetime.now(timezone.utc) or .replace(tzinfo=...)"
        )
    return value.astimezone(UTC).timestamp()


@dataclass(frozen=True, slots=True)
class SendOptions:
    """Per-call overrides of ``apply_async``."""

    countdown: float | timedelta | None = None
    eta: datetime | None = None
    expires: float | timedelta | datetime | None = None
    priority: int | None = None
    queue: str | None = None
    task_id: str | None = None
    headers: Mapping[str, Any] | None = field(default=None)


def build_envelope(
    options: TaskOptions, default_queue: str, args: Iterable[Any], kwargs: Mapping[str, Any],
    send: SendOptions,
) -> Envelope:
    """The envelope for one call, with parent/root ids taken from the running task if any.

    Raises:
        ConfigurationError: naive datetimes, countdown with eta, bad priority.
    """
    now = time.time()
    if send.countdown is not None and send.eta is not None:
        raise ConfigurationError("give countdown or eta, not both")
    eta = None
    if send.countdown is not None:
        eta = now + seconds(send.countdown, "countdown")
    elif send.eta is not None:
        eta = utc_instant(send.eta, "eta")
    expires_in = send.expires if send.expires is not None else options.expires
    expires = None
    if isinstance(expires_in, datetime):
        expires = utc_instant(expires_in, "expires")
    elif expires_in is not None:
        expires = now + seconds(expires_in, "expires")
    priority = options.priority if send.priority is None else send.priority
    if not 0 <= priority <= 9:
        raise ConfigurationError(f"priority must be 0..9, got {priority}")
    parent = maybe_current_task()
    return Envelope(
        task=options.name,
        args=tuple(args),
        kwargs=dict(kwargs),
        id=send.task_id or new_id(),
        queue=send.queue or options.queue or default_queue,
        priority=priority,
        eta=eta,
        expires=expires,
        max_retries=options.retries,
        timeout=options.timeout,
        soft_timeout=options.soft_timeout,
        parent_id=parent.id if parent else None,
        root_id=(parent.root_id or parent.id) if parent else None,
        headers=dict(send.headers or {}),
        created_at=now,
    )


class Publisher(Protocol):
    """All a :class:`Task` needs from its hub: settings (for the default queue) and a way to
    publish. ``Hub`` is one; a test can pass anything with these two members."""

    @property
    def settings(self) -> Settings: ...

    def publish(self, envelopes: Sequence[Envelope]) -> list[Result[Any]]:
        """Send ``envelopes`` in one batch; one Result per envelope, in order."""
        ...

    async def send_async(self, envelopes: Sequence[Envelope]) -> list[Result[Any]]:
        """``publish`` from async code (``Task.delay_async``)."""
    # -- canvas
    def signature(self, task: str, args: Iterable[Any] = (),
                  kwargs: Mapping[str, Any] | None = None,
                  options: Mapping[str, Any] | None = None, *, immutable: bool = False,
                  known: Task[Any, R] | None = None) -> Signature[Any]:
        """A signature of task ``task`` (``Task.s`` and friends are built on it)."""
        ...

    def group(self, members: Iterable[Signature[Any]]) -> Group:
        """A group of ``members`` (``Task.chunks`` is built on it)."""
        ...


class Task(Generic[P, R]):
    """A function registered with a hub. Call it to run it here; ``delay`` to send it.

    ``Task[P, R]`` keeps the function's parameters and return type, so type checkers verify
    ``delay``'s arguments and ``Result[R]`` carries the return type.

    Args:
        hub: where it is sent through (a ``Hub``, or any :class:`Publisher`).
        fn: the function.
        spec: its options.
        send: per-call options set by ``options(...)``.
    """

    def __init__(self, hub: Publisher, fn: Callable[..., Any], spec: TaskOptions,
                 send: SendOptions | None = None) -> None:
        self.hub = hub
        self.fn = fn
        self.spec = spec
        self._send = send or SendOptions()
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self._signature: inspect.Signature | Literal[False] | None = False  # False: unread
        # The hub's hooks (one shared object, so hooks registered later apply too); a
        # Publisher without hooks (a test's fake) gets none.
        hooks = getattr(hub, "hooks", None)
        self.hooks: Hooks = hooks if isinstance(hooks, Hooks) else Hooks()

    @property
    def name(self) -> str:
        """The name workers know the task by (``module.function`` unless given)."""
        return self.spec.name

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function here, now (a coroutine for an ``async def`` task)."""
        return self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Result[R]:
        """Send the task with these arguments.

        Raises:
            MessageError: an argument cannot be encoded, or the message is too large.
            TransportUnavailable: the broker cannot be reached.
        """
        return self.apply_async(args, kwargs)

    async def delay_async(self, *args: P.args, **kwargs: P.kwargs) -> Result[R]:
        """``delay`` for ``async def`` code: ``await add.delay_async(1, 2)``.

        It never blocks the event loop. Inside ``hub.connected()`` (which the FastAPI
        lifespan opens), and on any loop that has sent a few times already, the message goes
        to the broker from this loop, with no thread hop; before that it is handed to the
        hub's bridge thread and awaited. Send options come from
        ``options(...)``: ``await add.options(countdown=5).delay_async(1, 2)``.

        Raises:
            TypeError: the function cannot be called with these arguments.
            MessageError: an argument cannot be encoded, or the message is too large.
            TransportUnavailable: the broker cannot be reached.
        """
        self.check_arguments(args, kwargs)
        envelope = build_envelope(self.spec, self.hub.settings.default_queue, args, kwargs,
                                  self._send)
        envelope = with_unique(envelope, self.fn, args, kwargs, key_from=self.spec.unique,
                               task_ttl=self.spec.unique_for, key=None,
                               ttl=None)  # -- limits --
        [result] = await self.hub.send_async([envelope])
        return result

    def apply_async(
        self,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
        expires: float | timedelta | datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        task_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        unique_key: str | None = None,
        unique_for: float | timedelta | None = None,
        link: Canvas[Any] | Iterable[Canvas[Any]] | None = None,
        link_error: Canvas[Any] | Iterable[Canvas[Any]] | None = None,
    ) -> Result[R]:
        """Send the task with per-call options (they override ``options(...)`` and defaults).

        With ``unique_key`` (or the task option ``unique``), while a job with that key is
        queued or running, nothing is sent and the Result of that job is returned; the key is
        kept until the job finishes, or ``unique_for`` seconds at most (default: the task's,
        else one hour). See docs/limits.md.

        ``link`` callbacks (signatures, chains, groups, chords) run with the task's value when
        it succeeds, ``link_error`` ones with its id when it fails for good (see
        docs/workflows.md).

        Raises:
            ConfigurationError: countdown with eta, a naive datetime, a priority out of 0..9,
                headers together with callbacks; a unique job on a hub that keeps no results.
            MessageError: an argument cannot be encoded, or the message is too large.
            TransportUnavailable: the broker cannot be reached.
        """
        if link is not None or link_error is not None:  # -- canvas: sent as a signature
            if unique_key is not None or self.spec.unique is not None:
                raise ConfigurationError(f"{self.name}: a unique job cannot take link or "
                                         "link_error callbacks; chain it instead")
            return self._linked(tuple(args), dict(kwargs or {}), link, link_error, SendOptions(
                countdown, eta, expires, priority, queue, task_id, headers))
        send = _merge(self._send, SendOptions(countdown, eta, expires, priority, queue, task_id,
                                              headers))
        args = tuple(args)
        kwargs = kwargs or {}
        self.check_arguments(args, kwargs)
        envelope = build_envelope(self.spec, self.hub.settings.default_queue, args, kwargs, send)
        envelope = with_unique(envelope, self.fn, args, kwargs, key_from=self.spec.unique,
                               task_ttl=self.spec.unique_for, key=unique_key,
                               ttl=unique_for)  # -- limits --
        [result] = self.hub.publish([envelope])
        return result

    def apply(
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
        task_id: str | None = None, headers: Mapping[str, Any] | None = None,
    ) -> EagerResult[R]:
        """Run the task here and now, as a worker would, and return its finished result.

        It runs in this process with a real task context (``current_task()`` works) and the
        hub's task hooks; ``Retry`` and ``retry_for`` retries happen inline, at once (the
        countdown is not waited for), up to ``retries``. Nothing is sent or stored. For
        tests, scripts and a debugger.

        Args:
            args: positional arguments.
            kwargs: keyword arguments.
            task_id: the id the task sees (default: a new one).
            headers: headers the task sees in ``current_task().headers``.

        Returns:
            An ``EagerResult``: ``get()``, ``state``, ``result``, ``traceback`` answer at once.

        Raises:
            TypeError: the function cannot be called with these arguments.
        """
        # The worker's runner sits above this module (the worker imports tasks): importing
        # it at the top would be a cycle. apply is the one way down from a Task into it.
        from hubbub.worker.eager import apply

        return apply(self, args, kwargs, task_id=task_id, headers=headers)

    def delay_many(self, calls: Iterable[tuple[Any, ...] | Mapping[str, Any]]) -> list[Result[R]]:
        """Send many calls in one broker round trip.

        Args:
            calls: each an args tuple, or a kwargs mapping.

        Returns:
            One Result per call, in order.
        """
        envelopes = []
        for call in calls:
            args, kwargs = ((), call) if isinstance(call, Mapping) else (tuple(call), {})
            self.check_arguments(args, kwargs)
            envelope = build_envelope(self.spec, self.hub.settings.default_queue, args,
                                      kwargs, self._send)
            envelopes.append(with_unique(envelope, self.fn, args, kwargs,  # -- limits --
                                         key_from=self.spec.unique,
                                         task_ttl=self.spec.unique_for, key=None, ttl=None))
        return self.hub.publish(envelopes)

    # -- canvas --------------------------------------------------------------------------

    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """A signature of this call, for chains, groups, chords and callbacks.

        In a chain (or as a callback) the parent's value is put before ``args``, so they may
        be partial here; they are checked against the function when the canvas is sent.
        Options set by ``options(...)`` (queue, priority, countdown, expires) come along.
        """
        return self.hub.signature(self.name, args, kwargs, self._sig_options(), known=self)

    def si(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """An immutable signature: it ignores a parent's value, so its arguments are
        complete and checked here, like ``delay``'s.

        Raises:
            TypeError: the function cannot be called with these arguments.
        """
        self.check_arguments(args, kwargs)
        return self.hub.signature(self.name, args, kwargs, self._sig_options(),
                                  immutable=True, known=self)

    def map(self, items: Iterable[Any]) -> Signature[list[R]]:
        """One message that calls the task once per item, in one worker; its value is the
        list of values. Sync tasks only.

        Raises:
            TypeError: an item is not a valid single argument, or the task is async.
        """
        return self.starmap((item,) for item in items)

    def starmap(self, items: Iterable[Iterable[Any]]) -> Signature[list[R]]:
        """As :meth:`map`, each item being an argument tuple: ``add.starmap([(1, 2)])``.

        Raises:
            TypeError: an item does not fit the function, or the task is async.
        """
        from_self = self._calls(items)
        return self.hub.signature("hubbub.starmap", (self.name, from_self),
                                  options=self._sig_options())

    def chunks(self, items: Iterable[Iterable[Any]], n: int) -> Group:
        """A group of :meth:`starmap` messages of ``n`` calls each: many small calls spread
        over workers at a fraction of the messages.

        Raises:
            TypeError: an item does not fit the function, or the task is async.
            ConfigurationError: ``n`` is not a positive integer.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigurationError(f"chunks takes a chunk size n >= 1, not {n!r}")
        calls = self._calls(items)
        sigs = [self.hub.signature("hubbub.starmap", (self.name, calls[i:i + n]),
                                   options=self._sig_options()) for i in range(0, len(calls), n)]
        return self.hub.group(sigs)

    def _linked(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                link: Canvas[Any] | Iterable[Canvas[Any]] | None,
                link_error: Canvas[Any] | Iterable[Canvas[Any]] | None,
                call: SendOptions) -> Result[R]:
        send = _merge(self._send, call)
        if send.headers:
            raise ConfigurationError("headers cannot be sent with link/link_error callbacks; "
                                     "pass what the callback needs as arguments")
        if send.countdown is not None and send.eta is not None:
            raise ConfigurationError("give countdown or eta, not both")
        now = time.time()
        countdown = (max(0.0, utc_instant(send.eta, "eta") - now) if send.eta is not None
                     else send.countdown)
        expires = (max(0.0, utc_instant(send.expires, "expires") - now)
                   if isinstance(send.expires, datetime) else send.expires)
        self.check_arguments(args, kwargs)
        options = {"countdown": countdown, "expires": expires, "priority": send.priority,
                   "queue": send.queue, "task_id": send.task_id}
        sig = self.hub.signature(self.name, args, kwargs,
                                 {k: v for k, v in options.items() if v is not None},
                                 known=self)
        return sig.apply_async(link=link, link_error=link_error)

    def _calls(self, items: Iterable[Iterable[Any]]) -> list[list[Any]]:
        if self.is_async:
            raise TypeError(f"task {self.name!r} is async; map/starmap/chunks take sync "
                            "tasks: use group(task.s(x) for x in items) instead")
        calls = []
        for item in items:
            call = tuple(item)
            self.check_arguments(call, {})
            calls.append(list(call))
        return calls

    def _sig_options(self) -> dict[str, Any]:
        send = self._send
        return {name: value for name, value in (
            ("queue", send.queue), ("priority", send.priority), ("countdown", send.countdown),
            ("expires", send.expires if not isinstance(send.expires, datetime) else None),
        ) if value is not None}

    def check_arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Check a call against the function's signature, as calling it here would.

        Skipped for a task known here only by name (``hub.send_task``), whose function
        takes anything.

        Raises:
            TypeError: the function cannot be called with these arguments.
        """
        signature = self._signature
        if signature is False:
            signature = self._signature = _signature_to_check(self.fn)
        if signature is None:
            return
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {self.name!r} cannot be sent with these arguments: {exc}"
                            ) from None

    def options(self, **overrides: Any) -> Task[P, R]:
        """A copy of this task with changed options, e.g. ``add.options(queue="fast").delay(1, 2)``.

        Per-call send options (``countdown``, ``eta``, ``expires``, ``priority``, ``queue``,
        ``headers``) and task options (``retries``, ``timeout``, ...) are both accepted.

        Raises:
            ConfigurationError: an unknown option, with a suggestion.
        """
        send_fields = set(SendOptions.__dataclass_fields__) - {"task_id"}
        task_fields = set(TaskOptions.__dataclass_fields__) - {"name"}
        unknown = set(overrides) - send_fields - task_fields
        if unknown:
            raise unknown_option(sorted(unknown)[0], send_fields | task_fields)
        send = replace(self._send, **{k: v for k, v in overrides.items() if k in send_fields})
        spec = replace(self.spec, **{k: v for k, v in overrides.items()
                                     if k in task_fields and k not in send_fields})
        copy: Task[P, R] = Task(self.hub, self.fn, spec, send)
        copy._signature = self._signature  # read once per function
        return copy


def _signature_to_check(fn: Callable[..., Any]) -> inspect.Signature | None:
    """The signature calls are checked against; None when it takes anything or is unknown."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C callables have none
        return None
    kinds = sorted(p.kind for p in signature.parameters.values())
    if kinds == [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]:
        return None  # (*args, **kwargs): every call binds
    return signature


def _merge(base: SendOptions, call: SendOptions) -> SendOptions:
    return SendOptions(**{
        name: getattr(call, name) if getattr(call, name) is not None else getattr(base, name)
        for name in SendOptions.__dataclass_fields__
    })
