"""``Result`` and ``Task`` depend on two small protocols, not on the whole ``Hub``."""

from __future__ import annotations

import re
from typing import Any

import pytest

from hubbub import Hub, Result, State, Task, TaskOptions
from hubbub.errors import (
    ErrorKind,
    ResultError,
    ResultTimeout,
    TaskCrashed,
    TaskFailed,
    TaskRevoked,
    TaskTimedOut,
)
from hubbub.result import ResultsClient
from hubbub.results import READY_STATES, ErrorInfo, ResultRecord
from hubbub.task import Publisher
from tests.unit.fakes import FakePublisher, FakeResults


def result_of(client: FakeResults, record: ResultRecord | None, **kwargs: Any) -> Result[Any]:
    if record is not None:
        client.records[record.id] = record
    return Result(client, record.id if record else "missing", "shop.add", **kwargs)


# -- Task needs only a Publisher ------------------------------------------------------------


def test_a_task_sends_through_any_publisher_to_its_default_queue() -> None:
    publisher = FakePublisher("jobs")
    try:
        task: Task[..., Any] = Task(publisher, lambda x: x, TaskOptions(name="shop.echo"))

        result = task.options(priority=3).delay(7)

        [envelope] = publisher.sent
        assert (envelope.task, envelope.args, envelope.queue, envelope.priority) == (
            "shop.echo", (7,), "jobs", 3)
        assert result.id == envelope.id
    finally:
        publisher.results.bridge.stop()


def test_hub_is_a_publisher_and_a_results_client(hub: Hub) -> None:
    publisher: Publisher = hub
    client: ResultsClient = hub

    assert publisher.settings.default_queue == "default"
    assert client.bridge is hub.bridge


# -- Result needs only a ResultsClient ------------------------------------------------------


def test_get_returns_the_value_of_a_success(client: FakeResults) -> None:
    result = result_of(client, ResultRecord("a", State.SUCCESS, value={"total": 5}))

    assert result.get(timeout=1) == {"total": 5}
    assert (result.state, result.ready(), result.successful(), result.failed()) == (
        State.SUCCESS, True, True, False)


@pytest.mark.parametrize("state", list(State))
def test_ready_means_one_of_the_ready_states(client: FakeResults, state: State) -> None:
    result = result_of(client, ResultRecord("a", state))

    assert result.ready() is (state in READY_STATES)


def test_a_task_without_a_record_is_pending(client: FakeResults) -> None:
    result = result_of(client, None)

    assert (result.state, result.ready()) == (State.PENDING, False)
    assert result.info() == {"id": "missing", "state": "PENDING"}


@pytest.mark.parametrize(
    ("kind", "raised"), [(ErrorKind.CRASHED, TaskCrashed), (ErrorKind.TIMED_OUT, TaskTimedOut)]
)
def test_a_crash_or_a_hard_timeout_is_raised_as_a_task_failed_subclass(
    client: FakeResults, kind: ErrorKind, raised: type[TaskFailed]
) -> None:
    result = result_of(client, ResultRecord("a", State.FAILURE, error=ErrorInfo(kind, "died")))

    with pytest.raises(raised, match="died") as caught:
        result.get(timeout=1)
    assert isinstance(caught.value, TaskFailed)
    assert caught.value.type == kind


def test_a_failure_carries_the_remote_type_message_and_traceback(client: FakeResults) -> None:
    error = ErrorInfo("ValueError", "bad sku", "Traceback ...")
    result = result_of(client, ResultRecord("a", State.FAILURE, error=error))

    with pytest.raises(TaskFailed, match="ValueError: bad sku") as caught:
        result.get(timeout=1)
    assert (caught.value.type, caught.value.traceback) == ("ValueError", "Traceback ...")


def test_a_revoked_task_raises_task_revoked(client: FakeResults) -> None:
    error = ErrorInfo(ErrorKind.REVOKED, "expired before it ran")
    result = result_of(client, ResultRecord("a", State.REVOKED, error=error))

    with pytest.raises(TaskRevoked, match="expired before it ran"):
        result.get(timeout=1)


def test_no_ready_record_in_time_is_a_result_timeout(client: FakeResults) -> None:
    result = result_of(client, ResultRecord("a", State.STARTED))

    with pytest.raises(ResultTimeout, match=re.escape("task a gave no result within 0.5s")):
        result.get(timeout=0.5)


async def test_wait_awaits_the_same_answer_as_get(client: FakeResults) -> None:
    result = result_of(client, ResultRecord("a", State.SUCCESS, value=3))

    assert await result.wait(timeout=1) == 3


def test_waiting_for_an_ignored_result_is_refused(client: FakeResults) -> None:
    result = result_of(client, ResultRecord("a", State.SUCCESS), ignored=True)

    with pytest.raises(ResultError, match="ignores its result"):
        result.get(timeout=1)


def test_revoke_and_forget_go_to_the_client(client: FakeResults) -> None:
    result = result_of(client, None)

    result.revoke()
    result.forget()

    assert (client.revoked, client.forgotten) == (["missing"], ["missing"])


# -- the Hub's result methods -----------------------------------------------------------------


def test_hub_revoke_stores_a_revoked_record_with_the_revoked_error_kind() -> None:
    hub = Hub("memory://test-result-revoke")
    try:
        hub.bridge.run(hub.revoke(["a"]))
        record = hub.bridge.run(hub.read_results(["a", "b"]))
    finally:
        hub.close()

    assert list(record) == ["a"]
    assert (record["a"].state, record["a"].error) == (
        State.REVOKED, ErrorInfo(ErrorKind.REVOKED, "revoked"))


def test_a_hub_without_results_refuses_to_read_them_and_names_the_fix() -> None:
    hub = Hub("memory://test-result-none", results="none")
    try:
        with pytest.raises(ResultError, match=re.escape("pass results='redis://...'")):
            hub.bridge.run(hub.read_results(["a"]))
    finally:
        hub.close()


def test_the_states_are_the_ones_something_writes() -> None:
    assert [s.value for s in State] == [
        "PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED"]
