"""Signatures and the canvas: plain descriptions of calls, composed with ``|``, chain,
group and chord, and sent with ``delay``/``apply_async``.

Everything here is data until it is sent: sending freezes it (:mod:`hubbub.canvas.freeze`,
every id given at once) and publishes its first messages in one round trip
(:mod:`hubbub.canvas.send`); the rest rides inside those messages.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from hubbub.errors import ConfigurationError
from hubbub.settings import seconds

if TYPE_CHECKING:
    from hubbub.canvas.group_result import GroupResult
    from hubbub.canvas.send import CanvasApp
    from hubbub.result import Result
    from hubbub.task import Task

R = TypeVar("R")
T = TypeVar("T")

OPTIONS = ("queue", "priority", "countdown", "expires", "task_id")


class Canvas(abc.ABC, Generic[R]):
    """What every canvas element shares: callbacks, ``|`` and plain-data conversion.

    Attributes:
        app: the hub it is sent through.
        links: callbacks run with this element's value when it succeeds.
        errbacks: callbacks run with the failed task's id when a task of it fails for good.
    """

    def __init__(self, app: CanvasApp) -> None:
        self.app = app
        self.links: list[Canvas[Any]] = []
        self.errbacks: list[Canvas[Any]] = []

    def link(self, callback: Canvas[T]) -> Canvas[T]:
        """Run ``callback`` with this element's value when it succeeds; returns it."""
        self.links.append(_canvas(callback, "link"))
        return callback

    def link_error(self, errback: Canvas[T]) -> Canvas[T]:
        """Run ``errback`` with the failed task's id (as its first argument, unless it is
        immutable) when a task of this element fails for good; returns it."""
        self.errbacks.append(_canvas(errback, "link_error"))
        return errback

    def __or__(self, other: Canvas[T]) -> Chain[T]:
        """``a | b``: a chain; ``b`` gets ``a``'s value as its first argument."""
        return Chain(self.app, [self, _canvas(other, "|")])

    def _callbacks(self, link: Canvas[Any] | Iterable[Canvas[Any]] | None,
                   link_error: Canvas[Any] | Iterable[Canvas[Any]] | None) -> Canvas[R]:
        copy = self._copy()
        for value, target in ((link, copy.links), (link_error, copy.errbacks)):
            if value is None:
                continue
            items = [value] if isinstance(value, Canvas) else list(value)
            target.extend(_canvas(item, "link") for item in items)
        return copy

    @abc.abstractmethod
    def _copy(self) -> Canvas[R]:
        """A copy whose callbacks can be added to without touching this element."""

    def _handle(self, args: Iterable[Any], kwargs: Mapping[str, Any] | None,
                link: Canvas[Any] | Iterable[Canvas[Any]] | None,
                link_error: Canvas[Any] | Iterable[Canvas[Any]] | None) -> Any:
        target = self._callbacks(link, link_error)
        args, kwargs = tuple(args), dict(kwargs or {})
        return self.app.send_canvas(target._partial(args, kwargs) if args or kwargs else target)

    @abc.abstractmethod
    def _partial(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Canvas[R]:
        """This element with ``args``/``kwargs`` given at send time (``sig.delay(...)``)."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """This element as plain JSON-compatible data (``hub.signature(data)`` reads it)."""


def _canvas(value: object, what: str) -> Canvas[Any]:
    if not isinstance(value, Canvas):
        raise ConfigurationError(f"{what} takes a signature (task.s(...)), chain, group or "
                                 f"chord, not {type(value).__name__}")
    return value


def _callback_dicts(element: Canvas[Any], data: dict[str, Any]) -> dict[str, Any]:
    if element.links:
        data["link"] = [c.to_dict() for c in element.links]
    if element.errbacks:
        data["link_error"] = [c.to_dict() for c in element.errbacks]
    return data


class Signature(Canvas[R]):
    """One task call, described: the task's name, arguments and send options.

    Args:
        app: the hub.
        task: the task's name.
        args: positional arguments; a parent's value is put before them unless immutable.
        kwargs: keyword arguments.
        options: send options: ``queue``, ``priority`` (0..9), ``countdown`` and
            ``expires`` (seconds), ``task_id``.
        immutable: ignore the parent's value (``task.si``).
        known: the task, when it is registered here: its arguments are checked at send.

    Raises:
        ConfigurationError: an unknown or invalid option.
    """

    def __init__(self, app: CanvasApp, task: str, args: Iterable[Any] = (),
                 kwargs: Mapping[str, Any] | None = None,
                 options: Mapping[str, Any] | None = None, *, immutable: bool = False,
                 known: Task[Any, R] | None = None) -> None:
        super().__init__(app)
        if not isinstance(task, str) or not task:
            raise ConfigurationError(f"a signature needs a task name, not {task!r}")
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = check_options(dict(options)) if options else {}
        self.immutable = bool(immutable)
        self.known = known if known is not None else app.tasks.get(task)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}.{'si' if self.immutable else 's'}({', '.join(parts)})"

    def set(self, **options: Any) -> Signature[R]:
        """A copy with changed send options: ``sig.set(queue="fast", countdown=10)``.

        Raises:
            ConfigurationError: an unknown option (with the known ones) or a bad value.
        """
        copy = self._copy()
        copy.options = check_options({**self.options, **options})
        return copy

    def _copy(self) -> Signature[R]:
        copy: Signature[R] = Signature(self.app, self.task, self.args, self.kwargs,
                                       self.options, immutable=self.immutable,
                                       known=self.known)
        copy.links, copy.errbacks = list(self.links), list(self.errbacks)
        return copy

    def _partial(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Signature[R]:
        copy = self._copy()
        copy.args = args + self.args
        copy.kwargs = {**self.kwargs, **kwargs}
        return copy

    def delay(self, *args: Any, **kwargs: Any) -> Result[R]:
        """Send it, with ``args`` put before its own and ``kwargs`` merged over them.

        Raises:
            TypeError: the task (when known here) cannot take these arguments.
            ConfigurationError: a chord without a result store, a bad option.
            MessageError: an argument cannot be encoded, or a message is too large.
            TransportUnavailable: the broker cannot be reached.
        """
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
                    *, link: Canvas[Any] | Iterable[Canvas[Any]] | None = None,
                    link_error: Canvas[Any] | Iterable[Canvas[Any]] | None = None,
                    **options: Any) -> Result[R]:
        """Send it with partial arguments, callbacks and send options (see :meth:`set`).

        Raises:
            The same as :meth:`delay`.
        """
        target = self.set(**options) if options else self
        result: Result[R] = target._handle(args, kwargs, link, link_error)
        return result

    def to_dict(self) -> dict[str, Any]:
        """This signature as plain data: task, args, kwargs, options, immutable, callbacks."""
        return _callback_dicts(self, {"task": self.task, "args": list(self.args),
                                      "kwargs": dict(self.kwargs),
                                      "options": dict(self.options),
                                      "immutable": self.immutable})


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Send options of a signature, checked; durations as float seconds.

    Raises:
        ConfigurationError: an unknown option or a bad value.
    """
    for name in list(options):
        value = options[name]
        if name not in OPTIONS:
            raise ConfigurationError(f"unknown signature option {name!r}; the options are "
                                     f"{', '.join(OPTIONS)}")
        if value is None:
            del options[name]
        elif name in ("countdown", "expires"):
            if not isinstance(value, int | float | timedelta) or isinstance(value, bool):
                raise ConfigurationError(f"{name} takes seconds, not {value!r}")
            options[name] = seconds(value, name)
        elif name == "priority" and not (isinstance(value, int) and 0 <= value <= 9
                                          and not isinstance(value, bool)):
            raise ConfigurationError(f"priority must be 0..9, got {value!r}")
        elif name in ("queue", "task_id") and not (isinstance(value, str) and value):
            raise ConfigurationError(f"{name} takes a non-empty string, not {value!r}")
    return options


class Chain(Canvas[R]):
    """Steps run one after another, each given the previous one's value; the Result is the
    last step's (``.parent`` links back). A step that fails for good stops the chain: the
    steps after it are recorded as failed (``UpstreamFailed``) and never run."""

    def __init__(self, app: CanvasApp, steps: Iterable[Canvas[Any]]) -> None:
        super().__init__(app)
        self.steps: list[Canvas[Any]] = []
        for step in steps:
            step = _canvas(step, "chain")
            if isinstance(step, Chain) and not (step.links or step.errbacks):
                self.steps.extend(step.steps)
            else:
                self.steps.append(step)
        if not self.steps:
            raise ConfigurationError("a chain needs at least one step")

    def __repr__(self) -> str:
        return " | ".join(repr(s) for s in self.steps)

    def _copy(self) -> Chain[R]:
        copy: Chain[R] = Chain(self.app, self.steps)
        copy.links, copy.errbacks = list(self.links), list(self.errbacks)
        return copy

    def _partial(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Chain[R]:
        copy = self._copy()
        copy.steps[0] = copy.steps[0]._partial(args, kwargs)
        return copy

    def delay(self, *args: Any, **kwargs: Any) -> Result[R]:
        """Send the chain; ``args``/``kwargs`` go to its first step. Raises as
        :meth:`Signature.delay`."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
                    *, link: Canvas[Any] | Iterable[Canvas[Any]] | None = None,
                    link_error: Canvas[Any] | Iterable[Canvas[Any]] | None = None,
                    ) -> Result[R]:
        """Send the chain with callbacks. Raises as :meth:`Signature.delay`."""
        result: Result[R] = self._handle(args, kwargs, link, link_error)
        return result

    def to_dict(self) -> dict[str, Any]:
        """This chain as plain data: its steps' data in order, and its callbacks."""
        return _callback_dicts(self, {"chain": [s.to_dict() for s in self.steps]})


class Group(Canvas[list[Any]]):
    """Members run in parallel, sent in one round trip; their Results in a GroupResult."""

    def __init__(self, app: CanvasApp, members: Iterable[Canvas[Any]]) -> None:
        super().__init__(app)
        self.members: list[Canvas[Any]] = []
        for member in members:
            member = _canvas(member, "group")
            if isinstance(member, Group) and not (member.links or member.errbacks):
                self.members.extend(member.members)
            else:
                self.members.append(member)

    def __repr__(self) -> str:
        return f"group({', '.join(repr(m) for m in self.members)})"

    def _copy(self) -> Group:
        copy = Group(self.app, ())
        copy.members = list(self.members)  # checked and flattened when self was built
        copy.links, copy.errbacks = list(self.links), list(self.errbacks)
        return copy

    def _partial(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Group:
        copy = self._copy()
        copy.members = [m._partial(args, kwargs) for m in copy.members]
        return copy

    def delay(self, *args: Any, **kwargs: Any) -> GroupResult:
        """Send every member; ``args``/``kwargs`` go to each. Raises as
        :meth:`Signature.delay`."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
                    *, link_error: Canvas[Any] | Iterable[Canvas[Any]] | None = None,
                    ) -> GroupResult:
        """Send every member in one round trip. For a callback on the whole group, use a
        chord (``group | callback``). Raises as :meth:`Signature.delay`."""
        result: GroupResult = self._handle(args, kwargs, None, link_error)
        return result

    def to_dict(self) -> dict[str, Any]:
        """This group as plain data: its members' data, and its callbacks."""
        return _callback_dicts(self, {"group": [m.to_dict() for m in self.members]})


class Chord(Canvas[R]):
    """A header group and a body: the body runs once, with the header's values in order,
    when every header task has succeeded; if one fails for good, the body never runs and
    the chord's error callbacks do."""

    def __init__(self, app: CanvasApp, header: Iterable[Canvas[Any]], body: Canvas[R]) -> None:
        super().__init__(app)
        self.header = Group(app, header)
        self.body = _canvas(body, "chord body")
        if not self.header.members:
            raise ConfigurationError("a chord needs at least one header task; call the body "
                                     "directly for an empty header")

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    def _copy(self) -> Chord[R]:
        copy = Chord(self.app, self.header.members, self.body)
        copy.header.errbacks = list(self.header.errbacks)
        copy.links, copy.errbacks = list(self.links), list(self.errbacks)
        return copy

    def _partial(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Chord[R]:
        copy = self._copy()
        copy.header = self.header._partial(args, kwargs)
        return copy

    def delay(self, *args: Any, **kwargs: Any) -> Result[R]:
        """Send the header; ``args``/``kwargs`` go to each header task. The Result is the
        body's. Raises as :meth:`Signature.delay`."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
                    *, link: Canvas[Any] | Iterable[Canvas[Any]] | None = None,
                    link_error: Canvas[Any] | Iterable[Canvas[Any]] | None = None,
                    ) -> Result[R]:
        """Send the chord with callbacks. Raises as :meth:`Signature.delay`."""
        result: Result[R] = self._handle(args, kwargs, link, link_error)
        return result

    def to_dict(self) -> dict[str, Any]:
        """This chord as plain data: its header members' data, its body's, its callbacks."""
        return _callback_dicts(self, {"chord": [m.to_dict() for m in self.header.members],
                                      "body": self.body.to_dict()})


def from_dict(app: CanvasApp, data: Mapping[str, Any]) -> Canvas[Any]:
    """The canvas element that ``to_dict()`` made ``data`` from.

    Raises:
        ConfigurationError: ``data`` is not a canvas element's plain data.
    """
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"a canvas element's data is an object, not {data!r}")
    element: Canvas[Any]
    if "task" in data:
        element = Signature(app, data["task"], data.get("args") or (), data.get("kwargs"),
                            data.get("options"), immutable=bool(data.get("immutable")))
    elif "chain" in data:
        element = Chain(app, [from_dict(app, s) for s in _items(data, "chain")])
    elif "group" in data:
        element = Group(app, [from_dict(app, m) for m in _items(data, "group")])
    elif "chord" in data:
        element = Chord(app, [from_dict(app, m) for m in _items(data, "chord")],
                        from_dict(app, data.get("body") or {}))
    else:
        raise ConfigurationError("a canvas element's data has one of the keys task, chain, "
                                 f"group or chord; got {sorted(data)}")
    for callback in _items(data, "link"):
        element.link(from_dict(app, callback))
    for errback in _items(data, "link_error"):
        element.link_error(from_dict(app, errback))
    return element


def _items(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise ConfigurationError(f"{key!r} in a canvas element's data is a list")
    return value


def chain(*steps: Canvas[Any]) -> Chain[Any]:
    """``chain(a.s(1), b.s(), c.s())``: as ``a.s(1) | b.s() | c.s()``.

    Raises:
        ConfigurationError: no steps, or a step that is not a canvas element.
    """
    if not steps:
        raise ConfigurationError("a chain needs at least one step")
    return Chain(_canvas(steps[0], "chain").app, steps)


def group(*members: Canvas[Any] | Iterable[Canvas[Any]]) -> Group:
    """``group(a.s(1), a.s(2))`` or ``group(a.s(i) for i in range(10))``.

    Raises:
        ConfigurationError: no members, or one that is not a canvas element.
    """
    items: list[Canvas[Any]] = []
    for member in members:
        items.extend([member] if isinstance(member, Canvas) else member)
    if not items:
        raise ConfigurationError("a group needs at least one member")
    return Group(_canvas(items[0], "group").app, items)


def chord(header: Group | Iterable[Canvas[Any]], body: Canvas[R]) -> Chord[R]:
    """``chord(group_or_signatures, body)``: the body gets the header's values, in order.

    Raises:
        ConfigurationError: an empty header, or an element that is not a canvas element.
    """
    members = header.members if isinstance(header, Group) else list(header)
    chord_ = Chord(_canvas(body, "chord body").app, members, body)
    if isinstance(header, Group):
        chord_.header.errbacks = list(header.errbacks)
    return chord_
