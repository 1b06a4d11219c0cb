"""Schedule entries: parsing, slot arithmetic for intervals and cron, DST in Europe/Paris."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from hubbub import ConfigurationError, Hub, ScheduleError
from hubbub.schedule import entries
from hubbub.schedule.entries import Cron, Interval, make_trigger, slot_id


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


def iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%d %H:%MZ")


def slots(trigger: Cron | Interval, after: float, n: int) -> list[str]:
    found, at = [], after
    for _ in range(n):
        at = trigger.next_after(at)
        found.append(iso(at))
    return found


@pytest.fixture
def hub() -> Iterator[Hub]:
    h = Hub("memory://schedule-entries")
    try:
        yield h
    finally:
        h.close()


# -- intervals ---------------------------------------------------------------------------


def test_interval_slots_are_multiples_of_the_period_since_the_epoch() -> None:
    every = Interval(30.0)

    assert every.next_after(utc(2024, 1, 1, 12, 0, 10)) == utc(2024, 1, 1, 12, 0, 30)
    assert every.next_after(utc(2024, 1, 1, 12, 0, 30)) == utc(2024, 1, 1, 12, 1, 0)
    assert every.latest_at_or_before(utc(2024, 1, 1, 12, 0, 30)) == utc(2024, 1, 1, 12, 0, 30)
    assert every.latest_at_or_before(utc(2024, 1, 1, 12, 0, 29)) == utc(2024, 1, 1, 12, 0, 0)


def test_interval_counts_the_slots_in_a_half_open_range() -> None:
    every = Interval(1.0)

    assert every.count_between(100.0, 100.0) == 0
    assert every.count_between(100.0, 100.5) == 0
    assert every.count_between(100.0, 101.0) == 1
    assert every.count_between(99.5, 110.0) == 11


def test_sub_second_intervals_give_exact_distinct_slots() -> None:
    every = Interval(0.1)
    got, at = [], 1_700_000_000.05
    for _ in range(5):
        at = every.next_after(at)
        got.append(at)

    assert got == [1_700_000_000.1, 1_700_000_000.2, 1_700_000_000.3, 1_700_000_000.4,
                   1_700_000_000.5]
    assert len({slot_id("e", s) for s in got}) == 5


def test_timedelta_and_seconds_give_the_same_interval() -> None:
    assert make_trigger(every=timedelta(minutes=2)) == make_trigger(every=120) == Interval(120.0)


# -- cron --------------------------------------------------------------------------------


def test_cron_slots_in_utc_by_default() -> None:
    cron = make_trigger(cron="*/5  *  * * *")

    assert cron == Cron("*/5 * * * *", "UTC")
    assert slots(cron, utc(2024, 1, 1, 12, 3), 3) == [
        "2024-01-01 12:05Z", "2024-01-01 12:10Z", "2024-01-01 12:15Z"]


def test_cron_latest_slot_includes_an_exact_hit() -> None:
    cron = make_trigger(cron="0 * * * *")

    assert cron.latest_at_or_before(utc(2024, 1, 1, 12)) == utc(2024, 1, 1, 12)
    assert cron.latest_at_or_before(utc(2024, 1, 1, 12, 59)) == utc(2024, 1, 1, 12)
    assert cron.count_between(utc(2024, 1, 1, 0), utc(2024, 1, 2, 0)) == 24


def test_cron_in_a_time_zone_follows_its_local_clock() -> None:
    cron = make_trigger(cron="0 9 * * *", tz="Europe/Paris")

    # 09:00 in Paris is 08:00Z in winter (CET) and 07:00Z in summer (CEST).
    assert slots(cron, utc(2024, 1, 10), 1) == ["2024-01-10 08:00Z"]
    assert slots(cron, utc(2024, 7, 10), 1) == ["2024-07-10 07:00Z"]


def test_spring_forward_in_paris_runs_a_missing_wall_time_just_after_the_gap() -> None:
    # 2024-03-31: at 02:00 CET clocks jump to 03:00 CEST; 02:30 does not exist that day.
    daily = make_trigger(cron="30 2 * * *", tz="Europe/Paris")

    # That day it runs at 03:00 CEST (01:00Z); the next days at 02:30 CEST (00:30Z).
    assert slots(daily, utc(2024, 3, 30, 12), 3) == [
        "2024-03-31 01:00Z", "2024-04-01 00:30Z", "2024-04-02 00:30Z"]


def test_spring_forward_in_paris_drops_the_slots_inside_the_gap() -> None:
    half_hourly = make_trigger(cron="*/30 * * * *", tz="Europe/Paris")

    # 01:30 CET, then 03:00 CEST: the wall times 02:00 and 02:30 never happen.
    assert slots(half_hourly, utc(2024, 3, 31, 0, 0), 3) == [
        "2024-03-31 00:30Z", "2024-03-31 01:00Z", "2024-03-31 01:30Z"]
    # The local day of 31 March (23:00Z to 22:00Z) has 23 hours: 46 half hours.
    assert half_hourly.count_between(utc(2024, 3, 30, 23), utc(2024, 3, 31, 22)) == 46


def test_fall_back_in_paris_runs_a_repeated_wall_time_twice() -> None:
    # 2024-10-27: at 03:00 CEST clocks go back to 02:00 CET; 02:30 happens twice.
    daily = make_trigger(cron="30 2 * * *", tz="Europe/Paris")

    assert slots(daily, utc(2024, 10, 26, 12), 3) == [
        "2024-10-27 00:30Z", "2024-10-27 01:30Z", "2024-10-28 01:30Z"]


def test_fall_back_in_paris_keeps_hourly_slots_one_hour_apart_in_utc() -> None:
    hourly = make_trigger(cron="0 * * * *", tz="Europe/Paris")

    assert slots(hourly, utc(2024, 10, 26, 23, 30), 4) == [
        "2024-10-27 00:00Z", "2024-10-27 01:00Z", "2024-10-27 02:00Z", "2024-10-27 03:00Z"]
    # The local day of 27 October (22:00Z to 23:00Z) has 25 hours.
    assert hourly.count_between(utc(2024, 10, 26, 22), utc(2024, 10, 27, 23)) == 25


def test_fall_back_slots_are_the_same_from_any_starting_instant() -> None:
    # A beat resumes from whatever slot it recorded: stepping from inside the repeated
    # hour must give the same slots as stepping through it.
    cron = make_trigger(cron="*/30 * * * *", tz="Europe/Paris")
    walk = [utc(2024, 10, 26, 23, 0)]
    for _ in range(6):
        walk.append(cron.next_after(walk[-1]))

    for before, after in itertools.pairwise(walk):
        assert cron.next_after(before) == after
        assert cron.latest_at_or_before(after + 60) == after
        assert cron.latest_at_or_before(after - 1) == before
    assert [iso(s) for s in walk[1:]] == [
        "2024-10-26 23:30Z", "2024-10-27 00:00Z", "2024-10-27 00:30Z", "2024-10-27 01:00Z",
        "2024-10-27 01:30Z", "2024-10-27 02:00Z"]


def test_six_field_cron_adds_seconds_as_croniter_defines_them() -> None:
    cron = make_trigger(cron="* * * * * */20")  # croniter reads seconds from the last field

    assert cron.next_after(utc(2024, 1, 1, 12)) == utc(2024, 1, 1, 12, 0, 20)


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("schedule", "message"), [
    ({"cron": "61 * * * *"}, "bad cron expression '61 * * * *'"),
    ({"cron": "every minute"}, "bad cron expression"),
    ({"cron": "0 0 30 2 *"}, "bad cron expression '0 0 30 2 *'"),
    ({"cron": ""}, "cron must be an expression"),
    ({"cron": "* * * * *", "tz": "Europe/Pariss"}, "unknown time zone 'Europe/Pariss'"),
    ({"cron": "* * * * *", "tz": "../etc/passwd"}, "unknown time zone"),
    ({"every": 0}, "every must be at least"),
    ({"every": -5}, "every must not be negative"),
    ({"every": "soon"}, "every must be a number of seconds"),
    ({"every": 5, "tz": "UTC"}, "tz applies to cron schedules only"),
    ({}, "not neither"),
    ({"every": 5, "cron": "* * * * *"}, "not both"),
])
def test_a_bad_schedule_is_a_schedule_error_that_names_the_problem(
    schedule: dict[str, object], message: str,
) -> None:
    with pytest.raises(ScheduleError, match=message.replace("*", r"\*")):
        make_trigger(**schedule)  # type: ignore[arg-type]


def test_cron_without_croniter_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entries, "_croniter", None)

    with pytest.raises(ConfigurationError, match=r"pip install hubbub\[schedule\]"):
        make_trigger(cron="* * * * *")
    assert make_trigger(every=5) == Interval(5.0)  # intervals need no extra


# -- the hub's API -----------------------------------------------------------------------


def test_schedule_by_name_stores_plain_data_on_the_hub(hub: Hub) -> None:
    entry = hub.schedule("shop.cleanup", remote=True, cron="*/5 * * * *", tz="Europe/Paris",
                         args=(1,), kwargs={"deep": True}, missed="skip", queue="low",
                         priority=2, expires=timedelta(minutes=1))

    assert hub.schedules == {"shop.cleanup": entry}
    assert entry.task == "shop.cleanup"
    assert entry.trigger == Cron("*/5 * * * *", "Europe/Paris")
    assert (entry.args, entry.kwargs, entry.missed) == ((1,), {"deep": True}, "skip")
    assert (entry.queue, entry.priority, entry.expires) == ("low", 2, 60.0)


def test_schedule_takes_a_task_and_a_name_for_a_second_entry(hub: Hub) -> None:
    @hub.task(name="report")
    def report(kind: str) -> None: ...

    hub.schedule(report, every=60, args=("short",))
    hub.schedule(report, cron="0 8 * * 1", args=("weekly",), name="report-weekly")

    assert sorted(hub.schedules) == ["report", "report-weekly"]
    assert hub.schedules["report-weekly"].task == "report"


def test_the_same_entry_twice_is_harmless_but_a_different_one_is_refused(hub: Hub) -> None:
    hub.schedule("t", remote=True, every=10)
    hub.schedule("t", remote=True, every=10)

    with pytest.raises(ScheduleError, match="'t' already exists; pass name="):
        hub.schedule("t", remote=True, every=20)


@pytest.mark.parametrize(("options", "message"), [
    ({"missed": "all"}, "missed must be 'once' or 'skip'"),
    ({"priority": 10}, "priority must be 0..9"),
    ({"expires": -1}, "expires must not be negative"),
    ({"name": ""}, "needs a name"),
])
def test_bad_entry_options_are_schedule_errors(
    hub: Hub, options: dict[str, object], message: str,
) -> None:
    with pytest.raises(ScheduleError, match=message):
        hub.schedule("t", remote=True, every=10, **options)  # type: ignore[arg-type]
    assert hub.schedules == {}


def test_periodic_registers_a_task_with_its_options_and_schedules_it(hub: Hub) -> None:
    @hub.periodic(every=timedelta(seconds=30), queue="beat", retries=2)
    def ping() -> str:
        return "pong"

    @hub.periodic(cron="0 * * * *", tz="Europe/Paris", name="hourly", missed="skip")
    async def hourly() -> None: ...

    assert ping() == "pong"
    assert hub.tasks[ping.name] is ping
    assert (ping.spec.queue, ping.spec.retries) == ("beat", 2)
    assert hub.schedules[ping.name].trigger == Interval(30.0)
    assert hub.schedules["hourly"].trigger == Cron("0 * * * *", "Europe/Paris")
    assert hub.schedules["hourly"].missed == "skip"
    assert hub.tasks["hourly"] is hourly


def test_periodic_with_a_bad_schedule_registers_nothing(hub: Hub) -> None:
    with pytest.raises(ScheduleError):
        hub.periodic(cron="nope")
    with pytest.raises(ScheduleError):
        hub.periodic(every=5, missed="never")  # type: ignore[arg-type]
    assert (hub.tasks, hub.schedules) == ({}, {})


def test_periodic_with_an_unknown_task_option_suggests_one(hub: Hub) -> None:
    decorate = hub.periodic(every=5, retrys=3)

    with pytest.raises(ConfigurationError, match="did you mean 'retries'"):
        decorate(lambda: None)


def test_slot_ids_are_readable_and_deterministic() -> None:
    assert slot_id("cleanup", utc(2024, 3, 31, 1)) == "cleanup@2024-03-31T01:00:00Z"
    assert slot_id("fast", 1_700_000_000.25) == "fast@2023-11-14T22:13:20.250000Z"
