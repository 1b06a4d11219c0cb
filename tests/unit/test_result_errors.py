"""What a caller gets back from a failed task: the error as a value, the remote traceback, and
exceptions that ``except ValueError`` (or a declared ``OrderError``) catches."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from hubbub import Hub, Result, Retry, State
from hubbub.errors import (
    ErrorKind,
    ResultTimeout,
    TaskCrashed,
    TaskFailed,
    TaskRevoked,
)
from hubbub.job import Failed
from hubbub.result import failure_class, task_failed
from hubbub.results import ErrorInfo, ResultRecord
from hubbub.task import Task, TaskOptions, declared_name
from hubbub.testing import drain
from hubbub.worker.execute import failure
from tests.unit.fakes import FakeResults


class OrderError(Exception):
    """An app's own exception, declared with ``raises=(OrderError,)``."""


class OutOfStock(OrderError):
    pass


def stored(client: FakeResults, record: ResultRecord, **kwargs: Any) -> Result[Any]:
    client.records[record.id] = record
    return Result(client, record.id, "shop.order", **kwargs)


def failed(type: str, message: str = "bad", traceback: str = "Traceback ...") -> ResultRecord:
    return ResultRecord("a", State.FAILURE, error=ErrorInfo(type, message, traceback))


# -- propagate=False, .result, .traceback ---------------------------------------------------


def test_get_without_propagate_returns_the_error_instead_of_raising(client: FakeResults) -> None:
    result = stored(client, failed("ValueError", "bad sku"))

    error = result.get(timeout=1, propagate=False)

    assert isinstance(error, TaskFailed)
    assert (error.type, error.message, error.traceback) == ("ValueError", "bad sku",
                                                            "Traceback ...")


def test_get_without_propagate_still_returns_the_value_of_a_success(client: FakeResults) -> None:
    result = stored(client, ResultRecord("a", State.SUCCESS, value=5))

    assert result.get(timeout=1, propagate=False) == 5


def test_get_without_propagate_returns_a_revocation(client: FakeResults) -> None:
    result = stored(client, ResultRecord("a", State.REVOKED,
                                         error=ErrorInfo(ErrorKind.REVOKED, "revoked")))

    assert isinstance(result.get(timeout=1, propagate=False), TaskRevoked)


def test_get_without_propagate_still_raises_when_no_result_came_in_time(
    client: FakeResults,
) -> None:
    result = stored(client, ResultRecord("a", State.STARTED))

    with pytest.raises(ResultTimeout):
        result.get(timeout=0.1, propagate=False)


async def test_wait_without_propagate_returns_the_error(client: FakeResults) -> None:
    result = stored(client, failed(ErrorKind.CRASHED, "killed"))

    error = await result.wait(timeout=1, propagate=False)

    assert isinstance(error, TaskCrashed)


def test_result_is_the_value_the_error_or_none_while_pending(client: FakeResults) -> None:
    pending = Result(client, "nothing-yet")
    running = stored(client, ResultRecord("r", State.STARTED))
    done = stored(client, ResultRecord("d", State.SUCCESS, value=[1, 2]))
    broken = stored(client, failed("KeyError", "'sku'"))

    assert (pending.result, running.result, done.result) == (None, None, [1, 2])
    assert isinstance(broken.result, KeyError)
    assert isinstance(broken.result, TaskFailed)


def test_traceback_is_the_remote_text_or_none(client: FakeResults) -> None:
    assert stored(client, failed("ValueError")).traceback == "Traceback ..."
    assert stored(client, ResultRecord("b", State.SUCCESS, value=1)).traceback is None
    assert Result(client, "nothing-yet").traceback is None
    assert stored(client, failed("ValueError", traceback="")).traceback is None


# -- a TaskFailed that is also the original class ---------------------------------------------


def test_except_value_error_catches_a_task_that_raised_value_error(client: FakeResults) -> None:
    result = stored(client, failed("ValueError", "bad sku"))

    with pytest.raises(ValueError, match="ValueError: bad sku") as caught:
        result.get(timeout=1)
    assert isinstance(caught.value, TaskFailed)
    assert type(caught.value).__name__ == "TaskFailed[ValueError]"


def test_the_combined_class_is_built_once(client: FakeResults) -> None:
    first = stored(client, failed("ZeroDivisionError")).get(timeout=1, propagate=False)
    second = stored(client, failed("ZeroDivisionError")).get(timeout=1, propagate=False)

    assert type(first) is type(second) is failure_class(ZeroDivisionError)


@pytest.mark.parametrize("name", sorted(
    name for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, Exception)
))
def test_every_builtin_exception_name_gives_a_task_failed_that_can_be_shown(name: str) -> None:
    error = task_failed(ErrorInfo(name, "boom", "tb"))

    assert isinstance(error, TaskFailed)
    assert (str(error), error.type, error.message, error.traceback) == (
        f"{name}: boom", name, "boom", "tb")
    repr(error)
    if type(error) is not TaskFailed:  # ExceptionGroup cannot be combined: a plain TaskFailed
        assert isinstance(error, getattr(builtins, name))


@pytest.mark.parametrize("name", [
    "KeyboardInterrupt", "SystemExit", "GeneratorExit", "BaseException", "print", "__import__",
    "os.system", "hubbub.errors.ConfigurationError", "OrderError", "", "object", "type",
])
def test_names_that_are_not_builtin_exceptions_give_a_plain_task_failed(name: str) -> None:
    error = task_failed(ErrorInfo(name, "boom"))

    assert type(error) is TaskFailed


def test_a_declared_exception_is_matched_by_its_qualified_name(client: FakeResults) -> None:
    result = stored(client, failed(declared_name(OrderError), "sold out"),
                    raises=(OrderError,))

    with pytest.raises(OrderError, match="sold out") as caught:
        result.get(timeout=1)
    assert isinstance(caught.value, TaskFailed)
    assert caught.value.type == "tests.unit.test_result_errors.OrderError"


def test_an_undeclared_exception_of_the_same_short_name_is_not_matched(
    client: FakeResults,
) -> None:
    result = stored(client, failed("OrderError", "sold out"), raises=(OrderError,))

    error = result.get(timeout=1, propagate=False)

    assert type(error) is TaskFailed


# -- end to end through a worker ------------------------------------------------------------


@pytest.fixture
def hub() -> Iterator[Hub]:
    h = Hub("memory://test-result-errors")
    try:
        yield h
    finally:
        h.close()


def test_a_task_error_round_trips_as_its_builtin_and_its_declared_class(hub: Hub) -> None:
    @hub.task
    def parse(text: str) -> int:
        return int(text)

    @hub.task(raises=(OrderError,))
    def order(sku: str) -> None:
        raise OutOfStock(f"{sku} is sold out")

    parsed, ordered = parse.delay("x"), order.delay("A-1")
    drain(hub)

    with pytest.raises(ValueError, match="invalid literal"):
        parsed.get(timeout=5)
    with pytest.raises(OrderError, match="A-1 is sold out") as caught:
        ordered.get(timeout=5)
    assert caught.value.type == declared_name(OrderError)
    assert "OutOfStock: A-1 is sold out" in (ordered.traceback or "")


def test_a_task_that_runs_out_of_retries_keeps_the_error_it_retried_for(hub: Hub) -> None:
    @hub.task(retries=1, retry_backoff=0.0, retry_jitter=False)
    def fetch(url: str) -> None:
        try:
            raise ConnectionError(f"{url} refused")
        except ConnectionError as exc:
            raise Retry(countdown=0, reason="try later") from exc

    result = fetch.delay("http://x")
    drain(hub)

    error = result.get(timeout=5, propagate=False)
    assert isinstance(error, ConnectionError)
    assert isinstance(error, TaskFailed)
    assert (error.type, error.message) == ("ConnectionError", "http://x refused")
    assert "raise ConnectionError" in error.traceback


# -- the worker side: failure() ----------------------------------------------------------------


def make_task(hub: Hub, **options: Any) -> Task[Any, Any]:
    return Task(hub, print, TaskOptions(name="shop.t", **options))


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_retry_raised_from_an_exception_records_that_exception(hub: Hub) -> None:
    def attempt() -> None:
        try:
            {}["sku"]
        except KeyError as exc:
            raise Retry(countdown=3, reason="later") from exc

    outcome = failure(make_task(hub, retries=2), raised_by(attempt), 0.1)

    assert isinstance(outcome, Failed)
    assert (outcome.error.type, outcome.error.message) == ("KeyError", "'sku'")
    assert "{}[\"sku\"]" in outcome.error.traceback
    assert (outcome.retry, outcome.countdown) == (True, 3)


def test_retry_raised_while_handling_an_exception_records_that_exception(hub: Hub) -> None:
    def attempt() -> None:
        try:
            raise TimeoutError("slow upstream")
        except TimeoutError:
            raise Retry()  # noqa: B904 - the implicit context is what is tested

    outcome = failure(make_task(hub, retries=2), raised_by(attempt), 0.1)

    assert isinstance(outcome, Failed)
    assert (outcome.error.type, outcome.error.message) == ("TimeoutError", "slow upstream")


def test_retry_from_none_still_records_the_retry_reason(hub: Hub) -> None:
    def attempt() -> None:
        try:
            raise TimeoutError("slow upstream")
        except TimeoutError:
            raise Retry(reason="quota") from None

    outcome = failure(make_task(hub, retries=2), raised_by(attempt), 0.1)

    assert isinstance(outcome, Failed)
    assert (outcome.error.type, outcome.error.message) == (ErrorKind.RETRY, "quota")


def test_a_declared_exception_is_recorded_under_its_qualified_name(hub: Hub) -> None:
    task = make_task(hub, raises=(OrderError,))

    outcome = failure(task, raised(OutOfStock("none left")), 0.1)
    plain = failure(task, raised(ValueError("x")), 0.1)

    assert isinstance(outcome, Failed)
    assert isinstance(plain, Failed)
    assert outcome.error.type == "tests.unit.test_result_errors.OrderError"
    assert plain.error.type == "ValueError"


def test_retry_in_a_task_with_no_retries_warns_why_it_fails_at_once(
    hub: Hub, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="hubbub.worker"):
        failure(make_task(hub), Retry(countdown=1), 0.1)
        failure(make_task(hub, retries=1), Retry(countdown=1), 0.1)

    [record] = caplog.records
    assert "shop.t" in record.getMessage()
    assert "retries=0" in record.getMessage()


def raised_by(fn: Any) -> BaseException:
    try:
        fn()
    except BaseException as exc:
        return exc
    raise AssertionError("expected an exception")

