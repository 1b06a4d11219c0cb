"""Sending a canvas: frozen nodes become envelopes (:func:`launch`), published at once.

:func:`launch` is pure and shared by the producer and the worker: the producer launches a
canvas's first tasks, a worker launches what follows a task that finished (its ``next``,
``link`` and ``err`` nodes, a chord's body).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from hubbub.canvas.freeze import freeze, needs_store
from hubbub.canvas.group_result import GroupResult
from hubbub.canvas.nodes import Node, followups_of, join_rest, rest_nodes, split_rest, tail
from hubbub.codecs import json_dumps
from hubbub.errors import ConfigurationError
from hubbub.message import Envelope
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
    """Turns nodes into envelopes with the hub's task options and default queue.

    Args:
        tasks: the hub's registered tasks (their options are the defaults of a step).
        default_queue: where a task registered nowhere here goes.
    """

    tasks: Mapping[str, Task[Any, Any]]
    default_queue: str
    _specs: dict[str, TaskOptions] = field(default_factory=dict)

    def launch(self, node: Node, parent: Any, *, parent_id: str | None = None,
               root_id: str | None = None, into: Launch | None = None) -> Launch:
        """The envelopes that start ``node``, each given ``parent`` first unless it is
        :data:`NO_PARENT` or the task is immutable.

        Raises:
            ConfigurationError: an option out of range (a priority, a naive datetime).
        """
        plan = into if into is not None else Launch()
        stack = [node]
        while stack:
            current = stack.pop()
            kind = current["k"]
            if kind == "task":
                plan.envelopes.append(self._envelope(current, parent, parent_id, root_id))
                continue
            members = current["members"] if kind == "group" else current["header"]
            plan.groups.append((current["id"], [_result_id(m) for m in members]))
            stack.extend(reversed(members))
        return plan

    def _envelope(self, node: Node, parent: Any, parent_id: str | None,
                  root_id: str | None) -> Envelope:
        name = node["task"]
        spec = self._specs.get(name)
        if spec is None:
            known = self.tasks.get(name)
            spec = self._specs[name] = known.spec if known else TaskOptions(name=name)
        args = node["args"]
        if parent is not NO_PARENT and not node["im"]:
            args = [parent, *args]
        opts = node["opts"]
        envelope = build_envelope(spec, self.default_queue, args, node["kwargs"], SendOptions(
            countdown=opts.get("countdown"), expires=opts.get("expires"),
            priority=opts.get("priority"), queue=opts.get("queue"), task_id=node["id"]))
        changes: dict[str, Any] = {}
        canvas = followups_of(node)
        if canvas is not None:
            changes["canvas"] = canvas
        if parent_id is not None:
            changes.update(parent_id=parent_id, root_id=root_id or parent_id)
        # A group's plain member changes nothing: a copy per member costs a group of
        # 10,000 a noticeable part of its send.
        return dataclasses.replace(envelope, **changes) if changes else envelope


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
    plan = Launcher(app.tasks, app.settings.default_queue).launch(node, NO_PARENT)
    if plan.groups and keeps:
        app.bridge.run(app.save_groups(plan.groups))
    app.publish(plan.envelopes)
    return handle(app, node, None)


def handle(app: CanvasApp, node: Node, parent: Result[Any] | GroupResult | None) -> Any:
    """The Result (or GroupResult) of a frozen ``node``, with ``.parent`` links."""
    kind = node["k"]
    if kind == "task":
        result = result_of(app, node["task"], node["id"])
        result.parent = parent
        current: Any = result
        for step in node["next"]:
            current = handle(app, step, current)
        return current
    members = node["members"] if kind == "group" else node["header"]
    group = GroupResult(app, node["id"], [handle(app, m, parent) for m in members])
    group.parent = parent
    return group if kind == "group" else handle(app, node["body"], group)


def result_of(app: CanvasApp, task: str, id: str) -> Result[Any]:
    """A Result for task ``task`` of id ``id`` on ``app``."""
    known = app.tasks.get(task)
    ignored = app.settings.results is None or bool(known and known.spec.ignore_result)
    return Result(app, id, task, ignored=ignored, raises=known.spec.raises if known else ())
