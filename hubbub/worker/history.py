"""What a worker adds to the records it writes for the task history: the task's note
(argument preview, queue, workflow links, the task it retries) and the attempt that ended.

The preview is the one place a task's arguments reach the history, so it is made safe
here, before it leaves the worker: values under secret-looking keys (``password``,
``token``, ``api_key``, ...) are replaced by ``***``, URL passwords masked
(:func:`hubbub._redact.redact`), and the text cut to :data:`~hubbub.results.history.MAX_ARGS`
characters. Only a preview that needed none of that is marked ``exact`` (it may be sent
again by a dashboard retry).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from hubbub._redact import redact
from hubbub._text import cap
from hubbub.codecs import json_dumps, json_loads
from hubbub.message import Envelope
from hubbub.results.base import ErrorInfo, State
from hubbub.results.history import MAX_ARGS, RETRY_OF, Attempt, TaskNote

__all__ = ["MASK", "attempt_of", "note_of", "positional_names", "preview"]

MASK = "***"
MAX_ATTEMPT_ERROR = 500  # characters of an attempt's error the history keeps
_SECRET_KEY = re.compile(
    r"pass|pwd|token|secret|key|auth|credential|signature|cookie|session", re.IGNORECASE)
_ATTEMPT_ENDS = frozenset({State.RETRY, State.FAILURE, State.SUCCESS, State.REVOKED})


def preview(args: Sequence[Any], kwargs: Mapping[str, Any], names: Sequence[str] = ()
            ) -> tuple[str, bool]:
    """The arguments as JSON text for a page (``repr`` where JSON cannot carry them), with
    secrets masked and cut to :data:`MAX_ARGS` characters.

    Args:
        args: the positional arguments.
        kwargs: the keyword arguments.
        names: the function's positional parameter names: a positional argument whose
            parameter's name looks secret is masked too.

    Returns:
        The text, and whether it is exactly the arguments (nothing masked, cut or
        changed by the encoding: ``json`` of it gives back ``args`` and ``kwargs``).
    """
    if not args and not kwargs:  # a task without arguments, the common case: one answer
        return _NO_ARGUMENTS
    if not kwargs and not _secret_names(tuple(names)):
        kinds = set(map(type, args))
        if kinds <= _PLAIN:  # flat plain values, the next most common: nothing to mask
            return _plain_preview(args, str in kinds) or _preview(args, kwargs, names)
    return _preview(args, kwargs, names)


_PLAIN = frozenset({int, str, bool, type(None)})  # exactly these types: JSON gives them back


def _plain_preview(args: Sequence[Any], strings: bool) -> tuple[str, bool] | None:
    """:func:`_preview`'s answer for positional arguments of :data:`_PLAIN` types and no
    secret-looking parameter, without its copies and checks; None when it falls short (an
    integer JSON cannot carry, a lone surrogate, a long text)."""
    try:
        text = json_dumps({"args": list(args), "kwargs": {}}).decode()
    except (TypeError, ValueError):
        return None
    if len(text) > MAX_ARGS:
        return None
    if not strings:  # digits, null, true and false: no URL to redact
        return text, True
    safe = redact(text)
    return cap(safe, MAX_ARGS), safe == text


@functools.lru_cache(maxsize=1024)
def _secret_names(names: tuple[str, ...]) -> bool:
    """Whether any of a function's positional parameter ``names`` looks secret."""
    return any(_SECRET_KEY.search(name) for name in names)


def _preview(args: Sequence[Any], kwargs: Mapping[str, Any], names: Sequence[str]
             ) -> tuple[str, bool]:
    plain = {"args": list(args), "kwargs": dict(kwargs)}
    shown = _masked(plain)
    shown["args"] = [MASK if i < len(names) and _SECRET_KEY.search(names[i]) else arg
                     for i, arg in enumerate(shown["args"])]
    try:
        text, encoded = json_dumps(shown).decode(), True
    except (TypeError, ValueError):
        text, encoded = repr(shown), False
    # Only the head can be shown: masking the rest of a large argument would cost every
    # record of the task for nothing (the margin keeps a URL cut by the head whole).
    head = text[: MAX_ARGS * 4]
    safe = redact(head)
    exact = (encoded and len(text) <= MAX_ARGS and safe == text and shown == plain
             and json_loads(text.encode()) == plain)
    return cap(safe + text[len(head):], MAX_ARGS), exact


def _masked(value: Any) -> Any:
    """``value`` with every mapping's secret-looking keys' values replaced by :data:`MASK`."""
    if isinstance(value, Mapping):
        return {k: MASK if isinstance(k, str) and _SECRET_KEY.search(k) else _masked(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


_NO_ARGUMENTS = _preview((), {}, ())


@functools.lru_cache(maxsize=1024)
def positional_names(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The names of ``fn``'s parameters that take positional arguments, in order."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or an object without a signature
        return ()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in parameters if p.kind in kinds)


def note_of(env: Envelope, queue: str, fn: Callable[..., Any] | None = None) -> TaskNote:
    """The note of ``env``, fetched from ``queue``: its arguments (positional ones named
    by ``fn``'s parameters, for masking) and its links."""
    text, exact = preview(env.args, env.kwargs, () if fn is None else positional_names(fn))
    canvas = env.canvas or {}
    chord = canvas.get("chord")
    retry_of = env.headers.get(RETRY_OF)
    return TaskNote(text, exact, queue, env.parent_id, env.root_id,
                    chord.get("id") if isinstance(chord, dict) else None,
                    tuple(dict.fromkeys(_children(canvas))) if canvas else (),
                    retry_of if isinstance(retry_of, str) else None)


def _children(canvas: Mapping[str, Any]) -> Iterator[str]:
    """The ids of the tasks ``canvas`` starts after its task: the first task(s) of the next
    step and of each callback, and of the chord's body (started by the member that
    completes it). Error callbacks are not children: they run instead."""
    steps = canvas.get("next")
    if isinstance(steps, list) and steps:
        yield from _heads(steps[0])
    for link in canvas.get("link") or ():
        yield from _heads(link)
    chord = canvas.get("chord")
    if isinstance(chord, dict):
        yield from _heads(chord.get("body"))


def _heads(node: Any) -> Iterator[str]:
    """The ids of the tasks that start when ``node`` is launched (checked nodes only)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if not isinstance(current, dict):
            continue
        kind = current.get("k")
        if kind == "task" and isinstance(current.get("id"), str):
            yield current["id"]
        elif kind in ("group", "chord"):
            members = current.get("members" if kind == "group" else "header")
            if isinstance(members, list):
                stack.extend(reversed(members))


def attempt_of(env: Envelope, state: State, worker: str, at: float,
               error: ErrorInfo | None, delay: float | None) -> Attempt | None:
    """The attempt a record in ``state`` ends (None for a record that ends none)."""
    if state not in _ATTEMPT_ENDS:
        return None
    text = None if error is None else cap(redact(f"{error.type}: {error.message}"),
                                          MAX_ATTEMPT_ERROR)
    return Attempt(env.retries + 1, at, worker, state.value, text,
                   delay if state == State.RETRY else None)
