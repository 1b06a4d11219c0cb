"""Mistakes caught where they are made: wrong arguments at ``delay()``, Celery's option names
at ``@hub.task``."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from hubbub import Hub
from hubbub.errors import ConfigurationError


@pytest.fixture
def hub() -> Iterator[Hub]:
    h = Hub(f"memory://test-task-calls-{uuid.uuid4().hex}")
    try:
        yield h
    finally:
        h.close()


def sent(hub: Hub) -> int:
    """How many messages were published (ready in the hub's own memory broker)."""
    client = hub.bridge.run(hub.client())
    return sum(s.ready for s in hub.bridge.run(client.transport.stats(None)))


# -- delay() checks the arguments ----------------------------------------------------------


@pytest.mark.parametrize(("args", "kwargs", "problem"), [
    ((1,), {}, "missing a required argument: 'y'"),
    ((1, 2, 3), {}, "too many positional arguments"),
    ((1, 2), {"z": 3}, "got an unexpected keyword argument 'z'"),
    ((1,), {"x": 2}, "multiple values for argument 'x'"),
])
def test_delay_with_arguments_the_function_cannot_take_raises_type_error_at_the_call(
    hub: Hub, args: tuple[Any, ...], kwargs: dict[str, Any], problem: str,
) -> None:
    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError, match=problem) as caught:
        add.delay(*args, **kwargs)

    assert add.name in str(caught.value)
    assert sent(hub) == 0


def test_apply_async_and_delay_many_check_every_call(hub: Hub) -> None:
    @hub.task
    def add(x: int, y: int = 0) -> int:
        return x + y

    with pytest.raises(TypeError, match="unexpected keyword argument 'q'"):
        add.apply_async((1,), {"q": 2})
    with pytest.raises(TypeError, match="missing a required argument: 'x'"):
        add.delay_many([(1,), {"y": 2}])
    assert sent(hub) == 0


def test_arguments_the_function_takes_are_sent(hub: Hub) -> None:
    @hub.task
    async def greet(name: str, *rest: str, loud: bool = False, **extra: Any) -> str:
        return name

    greet.delay("a", "b", loud=True, colour="red")
    greet.options(queue="other").apply_async(["a"])
    greet.delay_many([("a",), {"name": "b"}])

    assert sent(hub) == 4


def test_a_task_known_only_by_name_is_sent_unchecked(hub: Hub) -> None:
    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    hub.send_task("elsewhere.anything", args=(1, 2, 3), kwargs={"whatever": 1})
    hub.send_task(add.name, args=(1,))  # by name: the worker checks, and dead-letters it

    assert sent(hub) == 2


def test_the_signature_is_read_once_per_function(
    hub: Hub, monkeypatch: pytest.MonkeyPatch,
) -> None:
    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    reads: list[object] = []
    real = inspect.signature

    def counting(fn: Any, *args: Any, **kwargs: Any) -> inspect.Signature:
        reads.append(fn)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counting)
    for i in range(3):
        add.delay(i, i)
    add.options(priority=5).delay(1, 2)

    assert len(reads) == 1


def _fixed(a: int, b: int) -> None: ...
def _defaults(a: int, b: int = 2, c: int = 3) -> None: ...
def _keyword_only(a: int, *, b: int) -> None: ...
def _positional_only(a: int, /, b: int) -> None: ...
def _star_args(a: int, *rest: int) -> None: ...
def _star_kwargs(a: int, **rest: int) -> None: ...
def _nothing() -> None: ...


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}), ((1,), {}), ((1, 2), {}), ((1, 2, 3), {}), ((1, 2, 3, 4), {}),
    ((), {"a": 1}), ((), {"a": 1, "b": 2}), ((1,), {"b": 2}), ((1,), {"a": 2}),
    ((1,), {"c": 3}), ((1, 2), {"c": 3}), ((), {"b": 2, "c": 3}), ((1,), {"z": 0}),
    ((1, 2), {"b": 2}), ((), {"rest": 1}),
]


@pytest.mark.parametrize("fn", [_fixed, _defaults, _keyword_only, _positional_only,
                                _star_args, _star_kwargs, _nothing])
def test_delay_accepts_exactly_the_calls_the_function_can_take(
    hub: Hub, fn: Any,
) -> None:
    task = hub.task(name=f"shapes.{fn.__name__}")(fn)

    for args, kwargs in CALLS:
        try:
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError:
            with pytest.raises(TypeError, match="cannot be sent with these arguments"):
                task.check_arguments(args, kwargs)
        else:
            task.check_arguments(args, kwargs)  # no error


# -- Celery's option names --------------------------------------------------------------------


@pytest.mark.parametrize(("option", "hint"), [
    ("bind", "current_task()"),
    ("max_retries", "hubbub calls it retries"),
    ("autoretry_for", "hubbub calls it retry_for"),
    ("time_limit", "hubbub calls it timeout"),
    ("soft_time_limit", "hubbub calls it soft_timeout"),
    ("acks_late", "always on"),
    ("track_started", "always on"),
])
def test_celery_option_names_get_what_hubbub_calls_them(hub: Hub, option: str,
                                                        hint: str) -> None:
    with pytest.raises(ConfigurationError, match=f"unknown task option '{option}'") as caught:
        hub.task(**{option: True})(lambda: None)
    assert hint in str(caught.value)
    assert "Celery" in str(caught.value)


def test_celery_option_names_get_the_hint_from_options_too(hub: Hub) -> None:
    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(ConfigurationError, match="hubbub calls it timeout"):
        add.options(time_limit=5)


def test_other_unknown_options_still_get_a_suggestion(hub: Hub) -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'retries'"):
        hub.task(retrie=3)(lambda: None)


def test_raises_takes_only_exception_classes(hub: Hub) -> None:
    with pytest.raises(ConfigurationError, match="raises takes Exception subclasses"):
        hub.task(raises=("ValueError",))(lambda: None)
    with pytest.raises(ConfigurationError, match="raises takes Exception subclasses"):
        hub.task(raises=(KeyboardInterrupt,))(lambda: None)
