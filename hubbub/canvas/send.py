"""Sending a canvas: frozen nodes become envelopes (:func:`launch`), published at once.

:func:`launch` is pure and shared by the producer and the worker: the producer launches a
canvas's first tasks, a worker launches what follows a task that finished (its ``next``,
``link`` and ``err`` nodes, a chord's body).
"""

from __future__ import annotations

import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from hubbub.canvas.freeze import freeze, needs_store
from hubbub.canvas.group_result import GroupResult
from hubbub.canvas.nodes import Node, followups_of, join_rest, rest_nodes, split_rest, tail
from hubbub.codecs import json_dumps
from hubbub.context import maybe_current_task
from hubbub.errors import ConfigurationError
from hubbub.message import Envelope, Parts, body_fields, envelope_of_parts
from hubbub.result import Result, ResultsClient
from hubbub.task import Publisher, SendOptions, Task, TaskOptions, build_envelope

if TYPE_CHECKING:
    from hubbub.canvas.signature import Canvas


class CanvasApp(Publisher, ResultsClient, Protocol):
    """What the canvas needs from its hub (``Hub`` is one): publishing, results, the
    registered tasks, and group membership in the result store."""

    @property
    def tasks(self) -> dict[str, Task[Any, Any]]: ...

    def save_groups(self, groups: Sequence[tuple[str, list[str]]]
                    ) -> Coroutine[Any, Any, None]:
        """Keep each group's member ids in the result store (a coroutine for the bridge)."""
        ...

    def read_group(self, id: str) -> Coroutine[Any, Any, list[str] | None]:
        """The member ids saved for group ``id`` (a coroutine for the bridge)."""
        ...

    def publish_parts(self, parts: Sequence[Parts]) -> bool:
        """Encode and publish messages given as their parts in one batch; False, having
        sent nothing, when they must go as envelopes (through ``publish``)."""
        ...

    def send_canvas(self, element: Canvas[Any]) -> Any:
        """Freeze and send ``element``; its Result or GroupResult."""
        ...


class _NoParent:
    def __repr__(self) -> str:
        return "NO_PARENT"


NO_PARENT: Any = _NoParent()  # launched first: no parent's value is put before the arguments


@dataclass(slots=True)
class Launch:
    """Envelopes to publish, and groups whose member ids to save first."""

    envelopes: list[Envelope] = field(default_factory=list)
    groups: list[tuple[str, list[str]]] = field(default_factory=list)


@dataclass(slots=True)
class Launcher:
    """Turns nodes into envelopes, or their parts, with the hub's task options and default
    queue.

    Args:
        tasks: the hub's registered tasks (their options are the defaults of a step).
        default_queue: where a task registered nowhere here goes.
    """

    tasks: Mapping[str, Task[Any, Any]]
    default_queue: str
    _specs: dict[str, TaskOptions] = field(default_factory=dict)
    # (task, queue option, priority option) -> the body fields its untimed steps share, with
    # no id, time or parent (see _template): worked out once, not once per group member.
    _templates: dict[tuple[str, Any, Any], dict[str, Any]] = field(default_factory=dict)

    def launch(self, node: Node, parent: Any, *, parent_id: str | None = None,
               root_id: str | None = None, into: Launch | None = None) -> Launch:
        """The envelopes that start ``node``, each given ``parent`` first unless it is
        :data:`NO_PARENT` or the task is immutable.

        Raises:
            ConfigurationError: an option out of range (a priority, a naive datetime).
        """
        plan = into if into is not None else Launch()
        plan.envelopes.extend(envelope_of_parts(p) for p in self.parts(
            node, parent, plan.groups, parent_id=parent_id, root_id=root_id))
        return plan

    def parts(self, node: Node, parent: Any, groups: list[tuple[str, list[str]]], *,
              parent_id: str | None = None, root_id: str | None = None) -> list[Parts]:
        """``launch``'s messages as their parts (no Envelope built: a send's quick path), in
        the same order; the groups to save are added to ``groups``.

        Raises:
            ConfigurationError: an option out of range (a priority, a naive datetime).
        """
        now = time.time()  # one send: its messages share their creation time
        if parent_id is None:  # sent from a running task: its children
            running = maybe_current_task()
            if running is not None:
                parent_id, root_id = running.id, running.root_id
        parents = None if parent_id is None else (parent_id, root_id or parent_id)
        out: list[Parts] = []
        stack = [node]
        while stack:
            current = stack.pop()
            kind = current["k"]
            if kind == "task":
                out.append(self._parts_of(current, parent, parents, now))
                continue
            members = current["members"] if kind == "group" else current["header"]
            groups.append((current["id"], [_result_id(m) for m in members]))
            if all(m["k"] == "task" for m in members):  # a flat group: no stack round trip
                out.extend(self._parts_of(m, parent, parents, now) for m in members)
            else:
                stack.extend(reversed(members))
        return out

    def _parts_of(self, node: Node, parent: Any, parents: tuple[str, str] | None,
              now: float) -> Parts:
        name, opts = node["task"], node["opts"]
        args = node["args"]
        if parent is not NO_PARENT and not node["im"]:
            args = [parent, *args]
        if opts.get("countdown") is not None or opts.get("expires") is not None:
            fields = self._timed(node)
        else:
            key = (name, opts.get("queue"), opts.get("priority")) if opts else (name, None, None)
            template = self._templates.get(key)
            if template is None:
                template = self._templates[key] = self._template(key)
            if template["expires"] is None:
                fields = template.copy()
                fields["id"] = node["id"]
                fields["created_at"] = now
            else:  # the task's own expires option: a time per send
                fields = self._timed(node)
        if parents is not None:
            fields["parent_id"], fields["root_id"] = parents
        return fields, args, node["kwargs"], followups_of(node)

    def _spec(self, name: str) -> TaskOptions:
        spec = self._specs.get(name)
        if spec is None:
            known = self.tasks.get(name)
            spec = self._specs[name] = known.spec if known else TaskOptions(name=name)
        return spec

    def _template(self, key: tuple[str, Any, Any]) -> dict[str, Any]:
        """The body fields of step ``key`` with no times given: what build_envelope would
        fill in, with no id, time or parent (those are each send's).

        Raises:
            ConfigurationError: a priority out of range.
        """
        name, queue, priority = key
        fields = body_fields(build_envelope(self._spec(name), self.default_queue, (), {},
                                            SendOptions(priority=priority, queue=queue,
                                                        task_id="-")))
        fields.update(id="", created_at=0.0, parent_id=None, root_id=None)
        return fields

    def _timed(self, node: Node) -> dict[str, Any]:
        """The body fields of a step with a countdown or an expiry: its times from now."""
        opts = node["opts"]
        fields = body_fields(build_envelope(
            self._spec(node["task"]), self.default_queue, (), {}, SendOptions(
                countdown=opts.get("countdown"), expires=opts.get("expires"),
                priority=opts.get("priority"), queue=opts.get("queue"), task_id=node["id"])))
        fields["parent_id"] = fields["root_id"] = None  # parts() gives them
        return fields


def continuation(steps: list[Node], then: str | None) -> Node | None:
    """The next step of a chain, carrying the steps after it (``then``) at its tail; None
    when the chain ends here.

    Raises:
        CanvasError: the next step, taken from ``then``, is malformed.
    """
    if steps:
        first, rest = steps[0], join_rest(steps[1:], then)
    elif then:
        first, rest = split_rest(then)
    else:
        return None
    return first if rest is None else _with_rest(first, rest)


def _with_rest(first: Node, rest: str) -> Node:
    """A copy of ``first`` with the steps in ``rest`` after its last task (along copied
    paths)."""
    copy = dict(first)
    if copy["k"] == "task":
        if copy.get("then"):
            copy["then"] = json_dumps([*rest_nodes(copy["then"], packed=True),
                                       *rest_nodes(rest, packed=True)]).decode()
        elif copy["next"]:
            copy["next"] = [*copy["next"][:-1], _with_rest(copy["next"][-1], rest)]
        else:
            copy["then"] = rest
        return copy
    if copy["k"] == "chord":
        body = copy["body"] = _with_rest(copy["body"], rest)
        copy["header"] = [_member_body(m, body) for m in copy["header"]]
        return copy
    raise ConfigurationError("a group can only be the last step of a chain")


def _member_body(member: Node, body: Node) -> Node:
    """A copy of header ``member`` whose chord entry (on its last task) carries ``body``."""
    copy = dict(member)
    if copy["k"] == "chord":
        copy["body"] = _member_body(copy["body"], body)
    elif copy["next"]:
        copy["next"] = [*copy["next"][:-1], _member_body(copy["next"][-1], body)]
    else:
        copy["chord"] = {**copy["chord"], "body": body}
    return copy


def _result_id(member: Node) -> str:
    end = tail(member)
    return str(end["id"] if end is not None else member["id"])


def send(app: CanvasApp, element: Canvas[Any]) -> Any:
    """Freeze ``element``, save its groups, publish its first tasks in one round trip.

    The messages are built as their parts and published as such (``publish_parts``: the
    bytes of each made at once, no Envelope) unless the hub needs envelopes (middleware
    around publish, tracing, task-sent events); the bytes are the same either way.

    Returns:
        The Result of its last task (a chain's, a chord body's), or a GroupResult.

    Raises:
        ConfigurationError: a chord on a hub without a result store; a shape that cannot
            be followed.
        TypeError: a task registered here cannot take the arguments it will get.
        MessageError: an argument cannot be encoded, or a message is too large.
        TransportUnavailable: the broker cannot be reached.
    """
    node = freeze(element, fed=False)
    keeps = app.settings.results is not None
    if not keeps and needs_store(node):
        raise ConfigurationError(
            "a chord joins its header in the result store, and this hub keeps no results: "
            "give it one, e.g. Hub(broker, results='redis://127.0.0.1:6379/0')")
    groups: list[tuple[str, list[str]]] = []
    parts = Launcher(app.tasks, app.settings.default_queue).parts(node, NO_PARENT, groups)
    if groups and keeps:
        app.bridge.run(app.save_groups(groups))
    if not app.publish_parts(parts):
        app.publish([envelope_of_parts(p) for p in parts])
    return handle(app, node, None)


def handle(app: CanvasApp, node: Node, parent: Result[Any] | GroupResult | None) -> Any:
    """The Result (or GroupResult) of a frozen ``node``, with ``.parent`` links."""
    return _Results(app).of(node, parent)


class _Results:
    """Builds the Results of one send, each task's options read once (not once per member
    of a group of 10,000)."""

    def __init__(self, app: CanvasApp) -> None:
        self.app = app
        self.kept = app.settings.results is not None
        self._options: dict[str, tuple[bool, tuple[type[Exception], ...]]] = {}

    def of(self, node: Node, parent: Result[Any] | GroupResult | None) -> Any:
        kind = node["k"]
        if kind == "task":
            current: Any = self.result(node["task"], node["id"], parent)
            for step in node["next"]:
                current = self.of(step, current)
            return current
        members = node["members"] if kind == "group" else node["header"]
        group = GroupResult(self.app, node["id"], [self.of(m, parent) for m in members])
        group.parent = parent
        return group if kind == "group" else self.of(node["body"], group)

    def result(self, task: str, id: str, parent: Result[Any] | GroupResult | None
               ) -> Result[Any]:
        options = self._options.get(task)
        if options is None:
            known = self.app.tasks.get(task)
            options = self._options[task] = (
                not self.kept or bool(known and known.spec.ignore_result),
                known.spec.raises if known else ())
        result: Result[Any] = Result(self.app, id, task, ignored=options[0], raises=options[1])
        if parent is not None:
            result.parent = parent
        return result


def result_of(app: CanvasApp, task: str, id: str) -> Result[Any]:
    """A Result for task ``task`` of id ``id`` on ``app``."""
    return _Results(app).result(task, id, None)
