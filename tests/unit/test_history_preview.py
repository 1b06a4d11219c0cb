"""A task without arguments gets the same preview as any other, without the masking work."""

from __future__ import annotations

from hubbub.codecs import json_loads
from hubbub.worker.history import preview


def test_a_task_without_arguments_has_an_exact_empty_preview() -> None:
    for args, kwargs in (((), {}), ([], {})):
        text, exact = preview(args, kwargs, ("password",))
        assert json_loads(text.encode()) == {"args": [], "kwargs": {}}
        assert exact is True
