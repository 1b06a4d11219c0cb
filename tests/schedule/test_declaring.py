"""A schedule entry that names a task this hub does not know fails where it is declared, not
silently at every slot on a beat."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from hubbub import Hub
from hubbub.errors import ScheduleError


@pytest.fixture
def hub() -> Iterator[Hub]:
    h = Hub(f"memory://test-declaring-{uuid.uuid4().hex}")
    try:
        yield h
    finally:
        h.close()


def test_a_bare_function_name_suggests_the_registered_task(hub: Hub) -> None:
    @hub.task(name="shop.maintenance.cleanup")
    def cleanup() -> None: ...

    with pytest.raises(ScheduleError, match=r"did you mean 'shop.maintenance.cleanup'\?"):
        hub.schedule("cleanup", every=60)
    assert hub.schedules == {}


def test_a_misspelt_name_suggests_the_closest_task(hub: Hub) -> None:
    @hub.task(name="shop.send_digest")
    def digest() -> None: ...

    with pytest.raises(ScheduleError, match=r"'shop.send_digst'.*did you mean 'shop.send_digest'"):
        hub.schedule("shop.send_digst", every=60)


def test_the_error_says_how_to_schedule_a_task_that_lives_elsewhere(hub: Hub) -> None:
    with pytest.raises(ScheduleError, match="pass remote=True if only workers elsewhere know it"):
        hub.schedule("billing.invoice", cron="0 1 * * *")


def test_remote_true_schedules_a_task_this_hub_does_not_know(hub: Hub) -> None:
    entry = hub.schedule("billing.invoice", every=3600, remote=True)

    assert hub.schedules == {"billing.invoice": entry}


def test_a_registered_name_and_a_task_object_need_nothing_more(hub: Hub) -> None:
    @hub.task(name="shop.cleanup")
    def cleanup() -> None: ...

    hub.schedule("shop.cleanup", every=60)
    hub.schedule(cleanup, every=120, name="cleanup-slow")

    assert sorted(hub.schedules) == ["cleanup-slow", "shop.cleanup"]
