"""A task without arguments gets the same preview as any other, without the masking work."""

from __future__ import annotations

from hubbub.codecs import json_loads
from hubbub.worker.history import _preview, preview


def test_a_task_without_arguments_has_an_exact_empty_preview() -> None:
    for args, kwargs in (((), {}), ([], {})):
        text, exact = preview(args, kwargs, ("password",))
        assert json_loads(text.encode()) == {"args": [], "kwargs": {}}
        assert exact is True


def test_flat_plain_arguments_get_the_same_preview_as_the_general_path() -> None:
    # preview() answers flat ints/strings without the masking copies: the same text and
    # flag as the general path, secrets in URLs and secret-named parameters masked alike.
    cases: list[tuple[tuple[object, ...], tuple[str, ...]]] = [
        ((1, 2, 3), ()), ((1, "x"), ("a", "b")), ((True, None), ()),
        (("postgres://user:pw@db/shop",), ()), (("https://x/?token=abc",), ()),
        (("\udc80",), ()), ((2**70,), ()), (("a" * 3000,), ()),
        ((1,), ("password",)), ((1, "y"), ("api_token", "b")),
    ]
    for args, names in cases:
        assert preview(args, {}, names) == _preview(args, {}, names), args
    text, exact = preview(("postgres://user:pw@db/shop",), {}, ())
    assert "pw" not in text
    assert exact is False
    assert preview((1, 2), {}, ()) == ('{"args":[1,2],"kwargs":{}}', True)
