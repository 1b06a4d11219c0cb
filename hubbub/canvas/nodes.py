"""The canvas on the wire: frozen nodes, plain JSON, and their validation.

A canvas is *frozen* before it is sent: every task in it gets its id then, so the caller
holds every Result at once and a step published twice (a worker crashed between publishing
it and acking its parent) keeps its id. Chains are rewritten into ``next`` links, and a group
followed by anything into a chord, so only three kinds of node travel:

``task``
    ``{"k": "task", "task": name, "id": id, "args": [...], "kwargs": {...}, "opts": {...},
    "im": immutable, "next": [node], "link": [node], "err": [node], "chord": member |
    null}``. ``next`` is the rest of a chain, flat (its first gets this task's value, and
    takes the others along when it is sent), so a long chain is not a deep one; ``link`` are
    callbacks (they get it too), ``err`` run when it fails for good (they get its id).
    ``chord`` is set on the last task of each chord header member: ``{"id": chord id, "i":
    index, "n": header size, "body": node, "err": [node]}`` (``err``: the chord's error
    callbacks, run once if a header task fails).
``group``
    ``{"k": "group", "id": group id, "members": [node]}``.
``chord``
    ``{"k": "chord", "id": chord id, "header": [node], "body": node}``; the body travels in
    each header member's ``chord`` entry, so launching a chord launches its header.

An :class:`~hubbub.message.Envelope`'s ``canvas`` holds what follows its own task: the
``next``, ``link``, ``err`` and ``chord`` of its node (:func:`followups_of`). A worker checks
it with :func:`check_followups` before the task runs; what fails the check is dead-lettered
with the reason. This module imports nothing of hubbub's above ``codecs``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from hubbub.codecs import Undecodable, json_dumps, json_loads, pack, unpack

Node = dict[str, Any]

OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "queue": (str,),
    "priority": (int,),
    "countdown": (int, float),
    "expires": (int, float),
}
MAX_DEPTH = 64  # nested nodes a message may hold: deeper is refused, never recursed into
UPSTREAM_FAILED = "UpstreamFailed"  # ErrorInfo.type of a step that never ran: an earlier failed


class CanvasError(ValueError):
    """A canvas that cannot be followed; the message says where."""


def followups_of(node: Node) -> dict[str, Any] | None:
    """The part of a task node its envelope carries; None when nothing follows.

    Of a chain's remaining steps only the first travels as a node (``next``); the others
    travel as one opaque JSON text (``then``), already packed, from which each hop parses only
    its next step and passes the others on as text: a long chain costs each hop little more
    than its own step.
    """
    out: dict[str, Any] = {}
    steps = node.get("next") or []
    if steps:
        out["next"] = [steps[0]]
    then = join_rest(steps[1:], node.get("then"))
    if then is not None:
        out["then"] = then
    for name in ("link", "err"):
        if node.get(name):
            out[name] = node[name]
    if node.get("chord") is not None:
        out["chord"] = node["chord"]
    return out or None


# What a task node in ``then`` leaves out when it holds it: the rest of a chain crosses the
# broker at every hop, so it is kept short (the usual step is half the size). Filled in again
# when the steps are read (:func:`split_rest`, :func:`rest_nodes`).
_USUAL: dict[str, type] = {"kwargs": dict, "opts": dict, "im": bool, "next": list,
                           "link": list, "err": list}


def _short(item: Any) -> Any:
    """A packed task node without its fields of usual value (empty, or ``im`` false)."""
    if not isinstance(item, dict) or item.get("k") != "task":
        return item
    return {k: v for k, v in item.items()
            if not (type(v) is _USUAL.get(k) and not v)}


def _full(item: Any) -> Any:
    """``item`` with the fields :func:`_short` left out (each a fresh empty value)."""
    if isinstance(item, dict) and item.get("k") == "task":
        for name, kind in _USUAL.items():
            if name not in item:
                item[name] = kind()
    return item


def join_rest(nodes: list[Node], then: str | None) -> str | None:
    """The opaque ``then`` text of ``nodes`` followed by the steps already in ``then``."""
    if not nodes:
        return then
    packed = [_short(item) for item in pack(nodes)]
    if then:
        packed = [*packed, *rest_nodes(then, packed=True)]
    return json_dumps(packed).decode()


def rest_nodes(then: str | None, *, packed: bool = False) -> list[Any]:
    """The steps in a ``then`` text (unpacked unless ``packed``); [] when it is unreadable
    (each step is checked when it becomes the next one)."""
    if not then:
        return []
    try:
        items = json_loads(then.encode())
        if not isinstance(items, list):
            return []
        return items if packed else [_full(item) for item in unpack(items)]
    except (ValueError, TypeError, Undecodable, RecursionError):
        return []


def split_rest(then: str) -> tuple[Node, str | None]:
    """The first step of a ``then`` text, checked through, and the text of the others.

    Only the first step is parsed: the others are passed on as a slice of the text, checked
    when each becomes the next one. A long chain's hop then costs little more than its own
    step, instead of a parse and a dump of every step after it.

    Raises:
        CanvasError: the text or its first step is malformed.
    """
    quick = _first_of(then)
    if quick is not None:
        first_text, rest = quick
        try:
            first = _full(unpack(json_loads(first_text.encode())))
        except (ValueError, TypeError, Undecodable, RecursionError):
            pass  # the whole text says what is wrong, below
        else:
            _check(first, "canvas.then[0]", 1)
            return first, rest
    try:
        items = json_loads(then.encode())
    except (ValueError, TypeError, RecursionError) as exc:
        raise CanvasError(f"canvas.then: not JSON ({exc})") from None
    if not isinstance(items, list) or not items:
        raise CanvasError("canvas.then: not a non-empty list")
    try:
        first = _full(unpack(items[0]))
    except Undecodable as exc:
        raise CanvasError(f"canvas.then[0]: cannot be decoded ({exc})") from None
    _check(first, "canvas.then[0]", 1)
    return first, json_dumps(items[1:]).decode() if len(items) > 1 else None


_SCANNER = json.JSONDecoder()


def _first_of(then: str) -> tuple[str, str | None] | None:
    """The text of the first item of ``then`` as a sender writes it (``[{...},{...}]``, no
    spaces) and the text of the others; None for any other shape (the caller parses it all).

    The scanner only finds where the first item ends; the caller parses that item with the
    strict parser, so what is accepted is what a full parse accepts.
    """
    if not then.startswith("[{"):
        return None
    try:
        _, end = _SCANNER.raw_decode(then, 1)
    except (ValueError, RecursionError):
        return None
    if len(then) == end + 1 and then[end] == "]":
        return then[1:end], None
    if then.startswith(",{", end):
        return then[1:end], "[" + then[end + 1:]
    return None


def tail(node: Node) -> Node | None:
    """The task node whose value is ``node``'s value, or None when that is a group's list."""
    current: Any = node
    while isinstance(current, dict):  # safe on steps checked only in outline
        kind = current.get("k")
        if kind == "task":
            steps = current.get("next")
            if current.get("then"):  # the last step is in the opaque rest
                last = rest_nodes(current["then"])
                current = last[-1] if last else None
            elif not steps or not isinstance(steps, list):
                return current
            else:
                current = steps[-1]
        elif kind == "chord":
            current = current.get("body")
        else:
            return None
    return None


def task_ids(nodes: list[Node]) -> Iterator[str]:
    """Every task id in ``nodes`` that would run after them (``next``, ``link``, members,
    chord bodies), but not their error callbacks (those run instead)."""
    stack: list[Any] = list(nodes)
    seen: set[int] = set()
    while stack:  # steps after the next one are checked only in outline: take nothing on trust
        node = stack.pop()
        if not isinstance(node, dict) or id(node) in seen:
            continue
        seen.add(id(node))
        kind = node.get("k")
        if kind == "task" and isinstance(node.get("id"), str):
            yield node["id"]
        for name in ("next", "link", "members", "header"):
            if isinstance(node.get(name), list):
                stack.extend(node[name])
        if isinstance(node.get("then"), str):
            stack.extend(rest_nodes(node["then"]))
        member = node.get("chord")
        stack.append(member.get("body") if isinstance(member, dict) else None)
        stack.append(node.get("body"))


# -- validation -------------------------------------------------------------------------------


def checked_member(member: object) -> dict[str, Any] | None:
    """``member`` if it is a well-formed chord entry, else None (it came from a step checked
    only in outline)."""
    try:
        _check_member(member, "chord", 1)
    except CanvasError:
        return None
    assert isinstance(member, dict)
    return member


def check_followups(raw: object) -> None:
    """Check an envelope's ``canvas`` field.

    Raises:
        CanvasError: it is not what a sender writes; the message says where.
    """
    if not isinstance(raw, dict):
        raise CanvasError("canvas: not an object")
    unknown = set(raw) - {"next", "then", "link", "err", "chord"}
    if unknown:
        raise CanvasError(f"canvas: unknown field {sorted(unknown)[0]!r}")
    # The steps in ``then`` are checked one at a time, when each becomes the next one.
    if "then" in raw and not isinstance(raw["then"], str):
        raise CanvasError("canvas.then: not a string")
    for name in ("next", "link", "err"):
        _check_list(raw.get(name, []), f"canvas.{name}", 1)
    if raw.get("chord") is not None:
        _check_member(raw["chord"], "canvas.chord", 1)


def _check_list(value: object, where: str, depth: int) -> None:
    if not isinstance(value, list):
        raise CanvasError(f"{where}: not a list")
    for i, item in enumerate(value):
        _check(item, f"{where}[{i}]", depth)


def _text(node: dict[str, Any], name: str, where: str) -> None:
    value = node.get(name)
    if not isinstance(value, str) or not value:
        raise CanvasError(f"{where}.{name}: not a non-empty string")


def _check(node: object, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CanvasError(f"{where}: nested deeper than {MAX_DEPTH}")
    if not isinstance(node, dict):
        raise CanvasError(f"{where}: not an object")
    kind = node.get("k")
    if kind == "task":
        _check_task(node, where, depth)
    elif kind == "group":
        _text(node, "id", where)
        _check_list(node.get("members"), f"{where}.members", depth + 1)
    elif kind == "chord":
        _text(node, "id", where)
        _check_list(node.get("header"), f"{where}.header", depth + 1)
        _check(node.get("body"), f"{where}.body", depth + 1)
    else:
        raise CanvasError(f"{where}.k: unknown kind {kind!r} (expected task, group or chord)")


def _check_task(node: dict[str, Any], where: str, depth: int) -> None:
    _text(node, "task", where)
    _text(node, "id", where)
    if not isinstance(node.get("args"), list):
        raise CanvasError(f"{where}.args: not a list")
    kwargs = node.get("kwargs")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise CanvasError(f"{where}.kwargs: not an object with string keys")
    opts = node.get("opts")
    if not isinstance(opts, dict):
        raise CanvasError(f"{where}.opts: not an object")
    for name, value in opts.items():
        types = OPTION_TYPES.get(name)
        if types is None:
            raise CanvasError(f"{where}.opts: unknown option {name!r}")
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise CanvasError(f"{where}.opts.{name}: wrong type")
        if isinstance(value, int | float) and not 0 <= value <= (9 if name == "priority"
                                                                 else 1e10):
            raise CanvasError(f"{where}.opts.{name}: out of range")
    if not isinstance(node.get("im"), bool):
        raise CanvasError(f"{where}.im: not a boolean")
    for name in ("next", "link", "err"):
        _check_list(node.get(name, []), f"{where}.{name}", depth + 1)
    if "then" in node and not isinstance(node["then"], str):
        raise CanvasError(f"{where}.then: not a string")
    if node.get("chord") is not None:
        _check_member(node["chord"], f"{where}.chord", depth + 1)


def _check_member(member: object, where: str, depth: int) -> None:
    if not isinstance(member, dict):
        raise CanvasError(f"{where}: not an object")
    _text(member, "id", where)
    index, size = member.get("i"), member.get("n")
    if not (isinstance(index, int) and isinstance(size, int)) or isinstance(index, bool) \
            or isinstance(size, bool) or not 0 <= index < size:
        raise CanvasError(f"{where}: index and size must be integers, 0 <= i < n")
    _check(member.get("body"), f"{where}.body", depth + 1)
    _check_list(member.get("err", []), f"{where}.err", depth + 1)
