"""Admission's quick check of a task's arguments agrees with ``inspect.Signature.bind``."""

from __future__ import annotations

import inspect
import itertools
from typing import Any

from hubbub.worker.admission import _Shape


def plain(a: Any, b: Any, c: Any = 3, d: Any = 4) -> None: ...


def none() -> None: ...


def one(x: Any) -> None: ...


def defaults_only(x: Any = 1, y: Any = 2) -> None: ...


def _binds(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def test_quick_argument_check_agrees_with_signature_bind() -> None:
    names = ["a", "b", "c", "d", "x", "y", "zz"]
    for fn in (plain, none, one, defaults_only):
        signature = inspect.signature(fn)
        shape = _Shape.of(signature)
        assert shape is not None
        for count in range(6):
            args = tuple(range(count))
            for size in range(4):
                for keys in itertools.combinations(names, size):
                    kwargs = dict.fromkeys(keys, 0)
                    assert shape.fits(args, kwargs) == _binds(signature, args, kwargs), (
                        fn.__name__, args, kwargs)


def test_signatures_beyond_plain_parameters_are_left_to_bind() -> None:
    def star(*args: Any) -> None: ...

    def keyword_only(a: Any, *, b: Any) -> None: ...

    def positional_only(a: Any, /) -> None: ...

    def catch_all(**kwargs: Any) -> None: ...

    for fn in (star, keyword_only, positional_only, catch_all):
        assert _Shape.of(inspect.signature(fn)) is None
