from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from hubbub import Hub, Task, TaskOptions
from hubbub.context import TaskContext, enter, leave
from hubbub.errors import ConfigurationError
from hubbub.message import Envelope
from hubbub.task import SendOptions, build_envelope, utc_instant


def record_publishes(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> list[Envelope]:
    """Envelopes the hub is asked to publish, kept here: nothing reaches a broker."""
    envelopes: list[Envelope] = []

    def publish(batch: list[Envelope]) -> list[object]:
        envelopes.extend(batch)
        return [object() for _ in batch]

    monkeypatch.setattr(hub, "publish", publish)
    return envelopes


@pytest.fixture
def sent(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> list[Envelope]:
    return record_publishes(hub, monkeypatch)


@pytest.fixture
def inside_a_task() -> Iterator[TaskContext]:
    ctx = TaskContext(
        id="parent-id",
        task="shop.checkout",
        retries=0,
        max_retries=0,
        queue="default",
        root_id="root-id",
    )
    token = enter(ctx)
    try:
        yield ctx
    finally:
        leave(token)


def envelope_for(
    options: TaskOptions | None = None,
    send: SendOptions | None = None,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
) -> Envelope:
    return build_envelope(
        options or TaskOptions(name="t"), "default", args, kwargs or {}, send or SendOptions()
    )


# -- registering -------------------------------------------------------------------------------


def test_a_bare_decorator_registers_the_function_under_its_module_and_name(hub: Hub) -> None:
    @hub.task
    def add(x: int, y: int) -> int:
        """Add two numbers."""
        return x + y

    assert isinstance(add, Task)
    assert add.name.startswith(f"{__name__}.test_a_bare_decorator_registers_")
    assert add.name.endswith(".<locals>.add")
    assert hub.tasks[add.name] is add
    assert add.spec == TaskOptions(name=add.name)
    assert add(2, 3) == 5
    assert add.__doc__ == "Add two numbers."
    assert not add.is_async


def test_a_decorator_with_options_keeps_them(hub: Hub) -> None:
    @hub.task(
        name="mail.send",
        queue="mail",
        priority=5,
        retries=3,
        timeout=timedelta(seconds=90),
        soft_timeout=60,
        expires=300,
        ignore_result=True,
        on_crash="retry",
        retry_for=(ConnectionError,),
    )
    async def send(to: str) -> None:
        return None

    assert send.name == "mail.send"
    assert send.is_async
    assert send.spec == TaskOptions(
        name="mail.send",
        queue="mail",
        priority=5,
        retries=3,
        timeout=90.0,
        soft_timeout=60.0,
        expires=300.0,
        ignore_result=True,
        on_crash="retry",
        retry_for=(ConnectionError,),
    )


def test_registering_the_same_function_twice_is_allowed(hub: Hub) -> None:
    def job() -> None:
        return None

    first = hub.task(name="job")(job)
    second = hub.task(name="job")(job)

    assert hub.tasks["job"] is second
    assert first.fn is second.fn


def test_a_task_name_taken_by_another_function_is_refused(hub: Hub) -> None:
    @hub.task(name="shop.job")
    def one() -> None:
        return None

    def two() -> None:
        return None

    with pytest.raises(
        ConfigurationError, match=re.escape("task name 'shop.job' is already registered")
    ):
        hub.task(name="shop.job")(two)
    assert hub.tasks["shop.job"] is one


def test_an_unknown_decorator_option_is_refused(hub: Hub) -> None:
    with pytest.raises(ConfigurationError, match="unknown task option"):

        @hub.task(retires=3)
        def job() -> None:
            return None


def test_an_unknown_decorator_option_comes_with_a_suggestion(hub: Hub) -> None:
    with pytest.raises(
        ConfigurationError,
        match=re.escape("unknown task option 'retires' (did you mean 'retries'?)"),
    ):

        @hub.task(retires=3)
        def job() -> None:
            return None


@pytest.mark.parametrize("priority", [-1, 10])
def test_a_task_priority_outside_zero_to_nine_is_refused(hub: Hub, priority: int) -> None:
    with pytest.raises(
        ConfigurationError, match=re.escape(f"priority must be 0..9, got {priority}")
    ):
        hub.task(priority=priority)(lambda: None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries must not be negative"),
        ({"timeout": -5}, "timeout must not be negative"),
        ({"soft_timeout": "soon"}, "soft_timeout must be a number of seconds"),
        ({"on_crash": "explode"}, "on_crash must be 'fail' or 'retry'"),
    ],
)
def test_invalid_task_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TaskOptions(name="t", **options)


# -- options(...) -----------------------------------------------------------------------------


def test_options_returns_a_changed_copy_and_leaves_the_task_alone(hub: Hub) -> None:
    @hub.task(name="t", retries=1)
    def job() -> None:
        return None

    changed = job.options(retries=4, timeout=timedelta(seconds=3))

    assert (changed.spec.retries, changed.spec.timeout) == (4, 3.0)
    assert (job.spec.retries, job.spec.timeout) == (1, None)
    assert hub.tasks["t"] is job


def test_an_unknown_option_is_refused_with_a_suggestion(hub: Hub) -> None:
    @hub.task
    def job() -> None:
        return None

    with pytest.raises(
        ConfigurationError, match=re.escape("unknown task option 'queu' (did you mean 'queue'?)")
    ):
        job.options(queu="fast")


def test_task_id_and_name_are_not_options(hub: Hub) -> None:
    @hub.task
    def job() -> None:
        return None

    with pytest.raises(ConfigurationError, match="unknown task option 'name'"):
        job.options(name="other")
    with pytest.raises(ConfigurationError, match="unknown task option 'task_id'"):
        job.options(task_id="abc")


def test_options_send_overrides_reach_the_envelope(hub: Hub, sent: list[Envelope]) -> None:
    @hub.task(name="t", queue="slow", priority=1)
    def job(x: int) -> None:
        return None

    job.options(queue="fast", priority=8, headers={"h": 1}, retries=2).delay(7)

    [envelope] = sent
    assert (envelope.queue, envelope.priority, envelope.headers, envelope.max_retries) == (
        "fast",
        8,
        {"h": 1},
        2,
    )
    assert envelope.args == (7,)


def test_apply_async_overrides_options(hub: Hub, sent: list[Envelope]) -> None:
    @hub.task(name="t")
    def job() -> None:
        return None

    job.options(queue="fast", priority=8).apply_async(queue="urgent", task_id="given-id")

    [envelope] = sent
    assert (envelope.queue, envelope.priority, envelope.id) == ("urgent", 8, "given-id")


def test_a_priority_out_of_range_in_options_is_refused_when_sending(
    hub: Hub, sent: list[Envelope]
) -> None:
    @hub.task
    def job() -> None:
        return None

    with pytest.raises(ConfigurationError, match=re.escape("priority must be 0..9, got 12")):
        job.options(priority=12).delay()
    assert sent == []


def test_delay_many_sends_args_tuples_and_kwargs_mappings(hub: Hub, sent: list[Envelope]) -> None:
    @hub.task(name="t")
    def job(x: int = 0) -> None:
        return None

    job.delay_many([(1,), {"x": 2}])

    assert [(e.args, e.kwargs) for e in sent] == [((1,), {}), ((), {"x": 2})]
    assert sent[0].id != sent[1].id


# -- build_envelope ------------------------------------------------------------------------------


def test_an_envelope_takes_the_task_defaults() -> None:
    options = TaskOptions(name="t", queue="q", priority=3, retries=2, timeout=9, soft_timeout=5)

    envelope = envelope_for(options, args=(1, 2), kwargs={"k": "v"})

    assert envelope == Envelope(
        task="t",
        args=(1, 2),
        kwargs={"k": "v"},
        id=envelope.id,
        queue="q",
        priority=3,
        max_retries=2,
        timeout=9.0,
        soft_timeout=5.0,
        created_at=envelope.created_at,
    )


def test_an_envelope_without_a_queue_goes_to_the_default_queue() -> None:
    envelope = build_envelope(TaskOptions(name="t"), "jobs", (), {}, SendOptions())

    assert envelope.queue == "jobs"


@pytest.mark.parametrize("priority", [-1, 10])
def test_a_send_priority_outside_zero_to_nine_is_refused(priority: int) -> None:
    with pytest.raises(ConfigurationError, match=re.escape("priority must be 0..9")):
        envelope_for(send=SendOptions(priority=priority))


def test_a_naive_eta_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="eta must be timezone-aware"):
        envelope_for(send=SendOptions(eta=datetime(2030, 1, 1)))


def test_an_aware_eta_becomes_epoch_seconds() -> None:
    eta = datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))

    envelope = envelope_for(send=SendOptions(eta=eta))

    assert envelope.eta == datetime(2030, 1, 1, 10, tzinfo=UTC).timestamp()


def test_countdown_with_eta_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="give countdown or eta, not both"):
        envelope_for(send=SendOptions(countdown=5, eta=datetime.now(UTC)))


@pytest.mark.parametrize("countdown", [30, 30.0, timedelta(seconds=30)])
def test_a_countdown_sets_the_eta_after_now(countdown: float | timedelta) -> None:
    envelope = envelope_for(send=SendOptions(countdown=countdown))

    assert envelope.eta == envelope.created_at + 30


def test_a_negative_countdown_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="countdown must not be negative"):
        envelope_for(send=SendOptions(countdown=-1))


@pytest.mark.parametrize("expires", [60, 60.0, timedelta(minutes=1)])
def test_expires_in_seconds_or_a_timedelta_counts_from_now(expires: float | timedelta) -> None:
    envelope = envelope_for(send=SendOptions(expires=expires))

    assert envelope.expires == envelope.created_at + 60


def test_expires_as_an_aware_datetime_is_that_instant() -> None:
    at = datetime(2030, 6, 1, tzinfo=UTC)

    assert envelope_for(send=SendOptions(expires=at)).expires == at.timestamp()


def test_expires_as_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="expires must be timezone-aware"):
        envelope_for(send=SendOptions(expires=datetime(2030, 6, 1)))


def test_task_expires_applies_when_the_call_gives_none() -> None:
    envelope = envelope_for(TaskOptions(name="t", expires=timedelta(seconds=45)))

    assert envelope.expires == envelope.created_at + 45


def test_call_expires_overrides_task_expires() -> None:
    envelope = envelope_for(TaskOptions(name="t", expires=45), SendOptions(expires=5))

    assert envelope.expires == envelope.created_at + 5


def test_utc_instant_refuses_a_naive_datetime_and_names_the_fix() -> None:
    with pytest.raises(ConfigurationError, match=r"use datetime.now\(timezone.utc\)"):
        utc_instant(datetime(2030, 1, 1), "eta")


def test_headers_and_task_id_come_from_the_call() -> None:
    envelope = envelope_for(send=SendOptions(task_id="my-id", headers={"trace": "x"}))

    assert (envelope.id, envelope.headers) == ("my-id", {"trace": "x"})


# -- parent and root ids ---------------------------------------------------------------------------


def test_an_envelope_built_outside_a_task_has_no_parent() -> None:
    envelope = envelope_for()

    assert (envelope.parent_id, envelope.root_id) == (None, None)


def test_an_envelope_built_inside_a_task_records_its_parent_and_root(
    inside_a_task: TaskContext,
) -> None:
    envelope = envelope_for()

    assert (envelope.parent_id, envelope.root_id) == ("parent-id", "root-id")


def test_a_task_without_a_root_is_the_root_of_what_it_sends() -> None:
    token = enter(TaskContext(id="first", task="t", retries=0, max_retries=0, queue="default"))
    try:
        envelope = envelope_for()
    finally:
        leave(token)

    assert (envelope.parent_id, envelope.root_id) == ("first", "first")


# -- send_task ---------------------------------------------------------------------------------


def test_send_task_for_an_unknown_name_uses_the_hub_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = Hub("memory://test-unit", default_queue="jobs")
    try:
        sent = record_publishes(hub, monkeypatch)

        hub.send_task("elsewhere.resize", (1,), {"w": 2})
    finally:
        hub.close()

    [envelope] = sent
    assert envelope == Envelope(
        task="elsewhere.resize",
        args=(1,),
        kwargs={"w": 2},
        id=envelope.id,
        queue="jobs",
        created_at=envelope.created_at,
    )


def test_send_task_for_a_registered_name_lends_its_defaults(hub: Hub, sent: list[Envelope]) -> None:
    @hub.task(name="shop.resize", queue="images", retries=4, priority=2)
    def resize() -> None:
        return None

    hub.send_task("shop.resize", countdown=10)

    [envelope] = sent
    assert (envelope.queue, envelope.max_retries, envelope.priority) == ("images", 4, 2)
    assert envelope.eta == envelope.created_at + 10


def test_send_task_does_not_register_an_unknown_name(hub: Hub, sent: list[Envelope]) -> None:
    hub.send_task("elsewhere.resize")

    assert "elsewhere.resize" not in hub.tasks


def test_a_task_defined_in_a_script_is_named_as_the_worker_imports_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "shop.py").write_text(
        "from hubbub import Hub\n"
        "hub = Hub('memory://names')\n"
        "@hub.task\n"
        "def add(x: int, y: int) -> int:\n"
        "    return x + y\n"
        "if __name__ == '__main__':\n"
        "    print(add.name)\n"
    )
    done = subprocess.run([sys.executable, "shop.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30)
    assert done.stdout.strip() == "shop.add", done.stderr  # what `-A shop:hub` registers


def test_a_new_envelope_id_is_a_random_uuid4_in_hex() -> None:
    ids = {build_envelope(TaskOptions(name="t"), "default", (), {}, SendOptions()).id
           for _ in range(200)}

    assert len(ids) == 200
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert (parsed.hex, parsed.version, parsed.variant) == (value, 4, uuid.RFC_4122)
