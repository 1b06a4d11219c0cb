"""Dead-letter retention settings, the URL options that carry them and the purge filters."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from hubbub.errors import ConfigurationError
from hubbub.settings import Limits, resolve
from hubbub.transports._dead import DeadFilter, Retention, retention_of, task_of


def test_limits_keep_dead_letters_a_week_and_ten_thousand_per_queue_by_default() -> None:
    limits = Limits()
    assert (limits.dead_letter_ttl, limits.max_dead_letters) == (7 * 86400.0, 10_000)


def test_limits_take_a_timedelta_for_the_retention() -> None:
    assert Limits(dead_letter_ttl=timedelta(hours=2)).dead_letter_ttl == 7200.0  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [{"dead_letter_ttl": 0}, {"dead_letter_ttl": -1},
                                 {"max_dead_letters": 0}, {"max_dead_letters": 1.5}])
def test_limits_refuse_a_retention_that_keeps_nothing(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match="limits"):
        Limits(**bad)  # type: ignore[arg-type]


def test_environment_sets_the_retention_and_the_cap() -> None:
    settings = resolve({}, environ={"HUBBUB_DEAD_LETTER_TTL": "3600",
                                    "HUBBUB_MAX_DEAD_LETTERS": "50"})
    assert (settings.limits.dead_letter_ttl, settings.limits.max_dead_letters) == (3600.0, 50)


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="HUBBUB_MAX_DEAD_LETTERS"):
        resolve({}, environ={"HUBBUB_MAX_DEAD_LETTERS": "0"})


def test_url_options_win_over_keywords_and_leave_the_url() -> None:
    url, retention = retention_of("redis://h:1/0?prefix=p&dead_ttl=60&dead_max=5",
                                  dead_ttl=1.0, dead_max=9)
    assert url == "redis://h:1/0?prefix=p"
    assert retention == Retention(60.0, 5)


def test_keywords_fill_what_the_url_leaves_and_defaults_the_rest() -> None:
    assert retention_of("sqlite:///x.db", dead_max=9) == ("sqlite:///x.db",
                                                          Retention(7 * 86400.0, 9))


def test_options_are_taken_off_every_url_of_a_cluster_list() -> None:
    url, retention = retention_of("amqp://a/?dead_max=4;amqp://b/?heartbeat=5&dead_ttl=9")
    assert url == "amqp://a/;amqp://b/?heartbeat=5"
    assert retention == Retention(9.0, 4)


@pytest.mark.parametrize("query", ["dead_max=x", "dead_max=0", "dead_ttl=-5", "dead_ttl=nan"])
def test_bad_url_options_are_refused(query: str) -> None:
    with pytest.raises(ConfigurationError, match="dead_"):
        retention_of(f"sqlite:///x.db?{query}")


@pytest.mark.parametrize(("body", "task"), [
    (json.dumps({"task": "shop.pay"}).encode(), "shop.pay"),
    (b"hubbub-sig1 k1 abcd\n" + json.dumps({"task": "shop.pay"}).encode(), "shop.pay"),
    (b"\xff\x00 not json", None),
    (b"[1, 2]", None),
    (json.dumps({"task": 5}).encode(), None),
    (b"[" * 100_000, None),
    ("text, not bytes", None),
])
def test_task_of_reads_a_task_name_and_never_raises(body: object, task: str | None) -> None:
    assert task_of(body) == task


def test_filter_needs_every_condition_it_was_given() -> None:
    body = json.dumps({"task": "a.b"}).encode()
    match = DeadFilter(older_than=60, task="a.b", queue="q")
    assert match.matches("q", 1000.0, 1060.0, body)
    assert not match.matches("q", 1000.1, 1060.0, body)
    assert not match.matches("q2", 1000.0, 1060.0, body)
    assert not match.matches("q", 1000.0, 1060.0, b"{}")
    assert DeadFilter().matches("any", 1e12, 0.0, None)
    assert match.matches_record("q", 1000.0, 1060.0)


def test_filter_refuses_a_negative_age() -> None:
    with pytest.raises(ConfigurationError, match="older_than"):
        DeadFilter(older_than=-1)
