"""Freezing: a canvas becomes wire nodes (:mod:`hubbub.canvas.nodes`), every id given now.

Chains become ``next`` links; a group followed by anything becomes a chord; a chord's
membership goes on the last task of each header member. Arguments are checked here against
the functions of tasks registered on this hub, knowing where a parent's value is put first.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from hubbub.canvas.nodes import Node, tail
from hubbub.canvas.signature import Canvas, Chain, Chord, Group, Signature
from hubbub.errors import ConfigurationError
from hubbub.message import new_id
from hubbub.task import Task


def freeze(element: Canvas[Any], *, fed: bool) -> Node:
    """The wire node of ``element``; ``fed``: it will get a parent's value.

    Raises:
        TypeError: a task registered here cannot take the arguments it will get.
        ConfigurationError: a shape that cannot be followed (a callback on a group, a chord
            header member that ends in a group).
    """
    if isinstance(element, Signature):
        node = _task(element, fed)
    elif isinstance(element, Chain):
        node = _chain(element.steps, fed)
    elif isinstance(element, Chord):
        node = _chord(element, fed)
    elif isinstance(element, Group):
        if element.links:
            raise ConfigurationError("a group takes no link callback: use a chord, "
                                     "chord(group, callback) or group | callback")
        node = {"k": "group", "id": new_id(),
                "members": [_single(freeze(m, fed=fed), "a group member") for m in
                            element.members]}
    else:
        raise ConfigurationError(f"cannot send {type(element).__name__}")
    if not isinstance(element, Signature | Chord):  # those apply their own
        _add_callbacks(node, element)
    return node


def _task(sig: Signature[Any], fed: bool) -> Node:
    if sig.known is not None:
        fed_first = fed and not sig.immutable
        try:
            _check_shape(sig.known, len(sig.args) + fed_first, tuple(sig.kwargs))
        except TypeError as exc:
            where = " (after the parent's value, put first)" if fed_first else ""
            raise TypeError(f"{exc}{where}; use .si(...) to ignore the parent's value"
                            if where else str(exc)) from None
    # The usual member of a group has no options and no callbacks: skip building nothing.
    options = sig.options
    opts = {k: v for k, v in options.items() if k != "task_id"} if options else {}
    return {"k": "task", "task": sig.task, "id": options.get("task_id") or new_id(),
            "args": list(sig.args), "kwargs": dict(sig.kwargs), "opts": opts,
            "im": sig.immutable, "next": [],
            "link": [freeze(c, fed=True) for c in sig.links] if sig.links else [],
            "err": [freeze(c, fed=True) for c in sig.errbacks] if sig.errbacks else []}


@functools.lru_cache(maxsize=512)
def _check_shape(task: Task[Any, Any], count: int, names: tuple[str, ...]) -> None:
    """Check a call of ``count`` positional arguments and keywords ``names`` against
    ``task``'s function. Binding looks at no value, so a group of 10,000 calls of one shape
    binds once (a shape that fails is not cached: it raises each time).

    Raises:
        TypeError: the function cannot take such a call.
    """
    task.check_arguments((None,) * count, dict.fromkeys(names))


def _chain(steps: list[Canvas[Any]], fed: bool) -> Node:
    merged: list[Canvas[Any]] = []
    for step in steps:  # a group followed by anything is a chord
        last = merged[-1] if merged else None
        if isinstance(last, Chord) and not (last.links or last.errbacks):
            merged[-1] = _with_body(last, Chain(last.app, [last.body, step]))
        elif isinstance(last, Group):
            merged[-1] = _group_chord(last, step)
        else:
            merged.append(step)
    nodes = [freeze(step, fed=fed if i == 0 else True) for i, step in enumerate(merged)]
    if len(nodes) > 1:
        end = tail(nodes[0])
        assert end is not None, "a step before another ends in one task after merging"
        end["next"] = nodes[1:]  # flat: each takes the rest along when it is sent
    return nodes[0]


def _with_body(chord: Chord[Any], body: Canvas[Any]) -> Chord[Any]:
    copy = Chord(chord.app, chord.header.members, body)
    copy.header.errbacks = list(chord.header.errbacks)
    return copy


def _group_chord(group: Group, body: Canvas[Any]) -> Chord[Any]:
    chord = Chord(group.app, group.members, body)
    chord.header.errbacks = list(group.errbacks)
    return chord


def _chord(chord: Chord[Any], fed: bool) -> Node:
    body = freeze(chord.body, fed=True)
    header = [_single(freeze(m, fed=fed), "a chord header member") for m in
              chord.header.members]
    for node in header:  # the header's error callbacks
        for task in _tasks(node):
            task["err"].extend(freeze(c, fed=True) for c in chord.header.errbacks)
    errbacks = [freeze(c, fed=True) for c in chord.errbacks]
    for task in _tasks(body):  # a failed body calls them too
        task["err"].extend(errbacks)
    chord_id = new_id()
    for index, member in enumerate(header):
        end = tail(member)
        assert end is not None  # _single checked it
        end["chord"] = {"id": chord_id, "i": index, "n": len(header), "body": body,
                        "err": errbacks}
    result: Node = {"k": "chord", "id": chord_id, "header": header, "body": body}
    for link in chord.links:  # after the body
        end = tail(body)
        if end is None:
            raise ConfigurationError("a chord whose body is a group takes no link callback; "
                                     "chain a chord after it instead")
        end["link"].append(freeze(link, fed=True))
    return result


def _single(node: Node, what: str) -> Node:
    if tail(node) is None:
        raise ConfigurationError(f"{what} must end in one task, not a group; wrap the inner "
                                 "group in a chord with a task that collects its values")
    return node


def _add_callbacks(node: Node, element: Canvas[Any]) -> None:
    for link in element.links:
        end = tail(node)
        if end is None:
            raise ConfigurationError("a chain that ends in a group takes no link callback; "
                                     "end it with a task, or use a chord")
        end["link"].append(freeze(link, fed=True))
    errbacks = [freeze(c, fed=True) for c in element.errbacks]
    if errbacks:
        for task in _tasks(node):
            task["err"].extend(errbacks)


def _tasks(node: Node) -> Iterator[Node]:
    """The task nodes of ``node`` itself (its steps, members and bodies), not callbacks."""
    stack = [node]
    while stack:
        current = stack.pop()
        kind = current["k"]
        if kind == "task":
            yield current
            stack.extend(current["next"])
        elif kind == "group":
            stack.extend(current["members"])
        else:
            stack.extend(current["header"])
            stack.append(current["body"])


def needs_store(node: Node) -> bool:
    """Whether ``node`` holds a chord anywhere (its join lives in the result store)."""
    stack = [node]
    while stack:
        current = stack.pop()
        kind = current["k"]
        if kind == "chord":
            return True
        if kind == "group":
            stack.extend(current["members"])
        elif kind == "task":
            stack.extend(current["link"] + current["err"] + current["next"])
    return False
