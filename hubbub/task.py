"""Tasks: functions (plain or ``async def``) that can be sent to workers."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, Protocol, TypeVar

# SendOptions, TaskOptions and the helpers below live in their own modules; they are
# re-exported here, where users and the rest of hubbub have always imported them.
from hubbub._send_options import (
    SendOptions,
    build_envelope,
    merge_send,
    plain_fields,
    utc_instant,
)
from hubbub._task_options import (
    CELERY_OPTIONS,
    TaskOptions,
    declared_name,
    module_name,
    unknown_option,
)
from hubbub.errors import ConfigurationError
from hubbub.hooks import Hooks
from hubbub.limits.unique import with_unique
from hubbub.message import Envelope
from hubbub.settings import Settings

if TYPE_CHECKING:
    from hubbub.canvas.signature import Canvas, Group, Signature
    from hubbub.result import Result
    from hubbub.worker.eager import EagerResult

__all__ = [
    "CELERY_OPTIONS",
    "Publisher",
    "SendOptions",
    "Task",
    "TaskOptions",
    "build_envelope",
    "declared_name",
    "module_name",
    "unknown_option",
    "utc_instant",
]

P = ParamSpec("P")
R = TypeVar("R")


class Publisher(Protocol):
    """All a :class:`Task` needs from its hub: settings (for the default queue) and a way to
    publish. ``Hub`` is one; a test can pass anything with these two members."""

    @property
    def settings(self) -> Settings: ...

    def publish(self, envelopes: Sequence[Envelope]) -> list[Result[Any]]:
        """Send ``envelopes`` in one batch; one Result per envelope, in order."""
        ...

    # A Publisher may also have ``send_now(task, args, kwargs) -> Result | None``: one plain
    # call sent at once without an Envelope, or None when it cannot (``Producer.send_now``).

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
        self._signature: _ArgumentCheck | Literal[False] | None = False  # False: unread
        # The hub's hooks (one shared object, so hooks registered later apply too); a
        # Publisher without hooks (a test's fake) gets none.
        hooks = getattr(hub, "hooks", None)
        self.hooks: Hooks = hooks if isinstance(hooks, Hooks) else Hooks()
        # The hub's quick way to send one plain call (see delay), and what it sends from.
        self._send_now: Callable[[Task[Any, Any], tuple[Any, ...], dict[str, Any]],
                                 Result[Any] | None] | None = getattr(hub, "send_now", None)
        self._plain: tuple[TaskOptions, Settings, dict[str, Any] | None] | None = None
        self._sig_opts: dict[str, Any] | None = None  # see _sig_options

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
        self.check_arguments(args, kwargs)
        send_now = self._send_now
        if send_now is not None:  # the common case, without an Envelope: see send_now
            result = send_now(self, args, kwargs)
            if result is not None:
                return result
        [result] = self.hub.publish([self._build(args, kwargs, self._send)])
        return result

    def plain_fields(self) -> dict[str, Any] | None:
        """The body fields all plain sends of this task share (see
        ``_send_options.plain_fields``), worked out once per task options and hub settings;
        None when its options give every send a time, an id or headers of its own, or when
        it is a unique job."""
        settings = self.hub.settings
        plain = self._plain
        if plain is None or plain[0] is not self.spec or plain[1] is not settings:
            fields = None if self.spec.unique is not None else plain_fields(
                self.spec, settings.default_queue, self._send)
            plain = self._plain = (self.spec, settings, fields)
        return plain[2]

    async def delay_async(self, *args: P.args, **kwargs: P.kwargs) -> Result[R]:
        """``delay`` for ``async def`` code: ``await add.delay_async(1, 2)``.

        It never blocks the event loop or waits for the hub's bridge thread: it goes to the
        broker from this loop, on connections the loop opens with its first send (or
        ``hub.connected()``, which the FastAPI lifespan enters) and closes when it shuts
        down. Send options come from
        ``options(...)``: ``await add.options(countdown=5).delay_async(1, 2)``.

        Raises:
            TypeError: the function cannot be called with these arguments.
            MessageError: an argument cannot be encoded, or the message is too large.
            TransportUnavailable: the broker cannot be reached.
        """
        [result] = await self.hub.send_async([self._envelope(args, kwargs, self._send)])
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
        if (countdown is None and eta is None and expires is None and priority is None
                and queue is None and task_id is None and headers is None):
            send = self._send  # nothing to merge: the common apply_async(args, kwargs)
            if unique_key is None and unique_for is None and self._send_now is not None:
                call, named = tuple(args), dict(kwargs) if kwargs else {}
                self.check_arguments(call, named)
                result = self._send_now(self, call, named)
                if result is not None:
                    return result
                [result] = self.hub.publish([self._build(call, named, send)])
                return result
        else:
            send = merge_send(self._send, SendOptions(countdown, eta, expires, priority, queue,
                                                      task_id, headers))
        envelope = self._envelope(tuple(args), kwargs or {}, send, unique_key, unique_for)
        [result] = self.hub.publish([envelope])
        return result

    def _envelope(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], send: SendOptions,
                  unique_key: str | None = None,
                  unique_for: float | timedelta | None = None) -> Envelope:
        """The checked envelope of one call (what every way of sending builds).

        Raises:
            TypeError: the function cannot be called with these arguments.
            ConfigurationError: bad send options, or a bad unique key.
        """
        self.check_arguments(args, kwargs)
        return self._build(args, kwargs, send, unique_key, unique_for)

    def _build(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], send: SendOptions,
               unique_key: str | None = None,
               unique_for: float | timedelta | None = None) -> Envelope:
        """``_envelope`` of arguments already checked."""
        envelope = build_envelope(self.spec, self.hub.settings.default_queue, args, kwargs, send)
        if unique_key is None and unique_for is None and self.spec.unique is None:
            return envelope  # not a unique job (the common case: nothing to derive)
        return with_unique(envelope, self.fn, args, kwargs, key_from=self.spec.unique,
                           task_ttl=self.spec.unique_for, key=unique_key,
                           ttl=unique_for)  # -- limits --

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
            envelopes.append(self._envelope(args, kwargs, self._send))
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
        send = merge_send(self._send, call)
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
        """The send options a signature of this task takes along (read, never changed: a
        Signature copies them), worked out once: ``s()`` runs once per group member."""
        options = self._sig_opts
        if options is None:
            options = self._sig_opts = self._read_sig_options()
        return options

    def _read_sig_options(self) -> dict[str, Any]:
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
        if signature is None or signature.binds(args, kwargs):
            return
        try:
            signature.signature.bind(*args, **kwargs)
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


class _ArgumentCheck:
    """A function's signature, and a quick yes for the common call that fits it.

    ``binds`` answers without ``inspect.Signature.bind`` (whose cost is most of a send's
    argument check) for a function whose parameters are all positional-or-keyword; a False
    from it is not a no: ``bind`` then decides, and words the error.
    """

    __slots__ = ("index", "names", "required", "signature")

    def __init__(self, signature: inspect.Signature) -> None:
        self.signature = signature
        params = list(signature.parameters.values())
        simple = all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
        # names: None when the quick check does not apply; required: the leading parameters
        # without a default (one without a default cannot follow one with a default here).
        self.names = tuple(p.name for p in params) if simple else None
        self.index = {name: i for i, name in enumerate(self.names or ())}
        self.required = sum(p.default is inspect.Parameter.empty for p in params)

    def binds(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        """Whether a call with ``args`` and ``kwargs`` surely binds (False: not sure)."""
        names, given = self.names, len(args)
        if names is None or given > len(names):
            return False
        if not kwargs:
            return given >= self.required
        for name in kwargs:
            if self.index.get(name, -1) < given:  # unknown, or also given by position
                return False
        return all(names[i] in kwargs for i in range(given, self.required))


def _signature_to_check(fn: Callable[..., Any]) -> _ArgumentCheck | None:
    """The signature calls are checked against; None when it takes anything or is unknown."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C callables have none
        return None
    kinds = sorted(p.kind for p in signature.parameters.values())
    if kinds == [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]:
        return None  # (*args, **kwargs): every call binds
    return _ArgumentCheck(signature)
