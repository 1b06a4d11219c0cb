"""The limit options of a task and of ``apply_async``: what they accept, and the one-line
errors for what they do not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub import Hub
from hubbub.errors import ConfigurationError
from hubbub.limits.unique import UNIQUE_HEADER, with_unique
from hubbub.message import Envelope


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        yield h
    finally:
        h.close()


@pytest.mark.parametrize(("options", "message"), [
    ({"rate_limit": "fast"}, "not a rate; write it as a count per second, minute or hour"),
    ({"rate_limit": 5}, "must be a string"),
    ({"concurrency": 0}, "concurrency must be a whole number of at least 1"),
    ({"concurrency": "2"}, "concurrency must be a whole number"),
    ({"concurrency": True}, "concurrency must be a whole number"),
    ({"concurrency_key": ("customer",)}, "concurrency_key needs concurrency=N too"),
    ({"concurrency": 2, "concurrency_key": 7}, "concurrency_key takes parameter names"),
    ({"rate_limit_key": "customer"}, "rate_limit_key needs rate_limit="),
    ({"rate_limit": "1/s", "rate_limit_key": ["a b"]}, "rate_limit_key takes parameter names"),
    ({"unique": ("not an identifier",)}, "unique takes parameter names"),
    ({"unique": ()}, "unique takes parameter names"),
    ({"unique_for": 60}, "unique_for needs unique=... too"),
    ({"unique": "order_id", "unique_for": 0}, "unique_for must be more than 0 seconds"),
    ({"unique": "order_id", "unique_for": "soon"}, "unique_for must be a number of seconds"),
])
def test_bad_limit_options_fail_at_registration_with_one_line_that_says_the_fix(
        hub: Hub, options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        hub.task(**options)(lambda order_id: None)  # type: ignore[call-overload]
    assert "\n" not in str(caught.value)


def test_good_limit_options_are_kept_normalised(hub: Hub) -> None:
    @hub.task(rate_limit="100/m", concurrency=3, concurrency_key="customer",
              unique="order_id", unique_for=30, rate_limit_key="customer")
    def charge(order_id: int, customer: str) -> None: ...

    spec = charge.spec
    assert (spec.rate_limit, spec.concurrency, spec.concurrency_key, spec.unique,
            spec.unique_for, spec.rate_limit_key) == ("100/m", 3, ("customer",),
                                                      ("order_id",), 30.0, ("customer",))
    assert charge.options(rate_limit="5/s").spec.rate_limit == "5/s"
    with pytest.raises(ConfigurationError, match="not a rate"):
        charge.options(rate_limit="5 per second")


def test_a_derived_unique_key_names_the_task_and_the_argument_values() -> None:
    def charge(order_id: int, amount: float = 1.0) -> None: ...

    env = Envelope(task="shop.charge")
    by_name = with_unique(env, charge, (42,), {}, key_from=("order_id",), task_ttl=None,
                          key=None, ttl=None)
    by_kw = with_unique(env, charge, (), {"order_id": 42, "amount": 3}, key_from=("order_id",),
                        task_ttl=None, key=None, ttl=None)
    assert by_name.headers[UNIQUE_HEADER] == by_kw.headers[UNIQUE_HEADER] == "shop.charge:42"
    by_fn = with_unique(env, charge, (42,), {}, key_from=lambda order_id, **_: f"o{order_id}",
                        task_ttl=None, key=None, ttl=None)
    assert by_fn.headers[UNIQUE_HEADER] == "shop.charge:o42"
    assert with_unique(env, charge, (42,), {}, key_from=None, task_ttl=None, key=None,
                       ttl=None) is env


def test_a_unique_name_that_is_no_parameter_is_refused_at_send(hub: Hub) -> None:
    @hub.task(unique="order")
    def charge(order_id: int) -> None: ...

    with pytest.raises(ConfigurationError, match="'order', which is not a parameter"):
        charge.delay(1)


def test_a_key_function_that_returns_no_str_is_refused_at_send(hub: Hub) -> None:
    @hub.task(unique=lambda order_id: order_id)
    def charge(order_id: int) -> None: ...

    with pytest.raises(ConfigurationError, match="unique must return a str"):
        charge.delay(1)


def test_unique_for_without_a_key_is_refused_at_send(hub: Hub) -> None:
    @hub.task
    def charge(order_id: int) -> None: ...

    with pytest.raises(ConfigurationError, match="unique_for needs unique_key"):
        charge.apply_async((1,), unique_for=10)
    with pytest.raises(ConfigurationError, match="unique_key must be a non-empty str"):
        charge.apply_async((1,), unique_key="")


def test_unique_jobs_without_a_result_store_fail_with_the_fix(tmp_path: Path) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}", results="none")
    try:
        @hub.task
        def charge(order_id: int) -> None: ...

        with pytest.raises(ConfigurationError, match="keep their keys in the result store"):
            charge.apply_async((1,), unique_key="order:1")
    finally:
        hub.close()


def test_a_runtime_rate_is_checked_before_it_is_stored(hub: Hub) -> None:
    with pytest.raises(ConfigurationError, match="not a rate"):
        hub.bridge.run(hub.set_rate_limit("shop.charge", "lots"))
