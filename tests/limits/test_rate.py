"""Rate strings and the rate rule (pure: no store)."""

from __future__ import annotations

import pytest

from hubbub.errors import ConfigurationError
from hubbub.limits import parse_rate
from hubbub.limits.rate import LAG_ALLOWANCE, reserve


@pytest.mark.parametrize(("text", "count", "period"), [
    ("100/m", 100, 60), ("5/s", 5, 1), ("2000/h", 2000, 3600), (" 50 / s ", 50, 1),
    ("0.5/s", 0.5, 1),
])
def test_a_rate_is_a_count_per_second_minute_or_hour_with_room_for_the_start_lag(
        text: str, count: float, period: float) -> None:
    assert parse_rate(text).interval == pytest.approx((period + LAG_ALLOWANCE) / count)


@pytest.mark.parametrize("text", ["fast", "100", "100/d", "0/s", "-1/s", "/s", "1e3/s", ""])
def test_a_bad_rate_is_one_line_that_shows_how_to_write_one(text: str) -> None:
    with pytest.raises(ConfigurationError, match="100/m") as caught:
        parse_rate(text)
    assert "\n" not in str(caught.value)


def test_a_rate_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must be a string"):
        parse_rate(100)  # type: ignore[arg-type]


def test_the_first_start_is_now_and_each_next_one_interval_later() -> None:
    answer, tat = reserve(None, now=100.0, interval=0.1, horizon=0.5)
    assert (answer.granted, answer.at, tat) == (True, 100.0, pytest.approx(100.1))
    answer, tat2 = reserve(tat, now=100.0, interval=0.1, horizon=0.5)
    assert answer.granted
    assert answer.at == pytest.approx(100.1)
    assert tat2 == pytest.approx(100.2)


def test_a_start_beyond_the_horizon_is_not_reserved_and_says_when_one_could_be() -> None:
    answer, tat = reserve(101.0, now=100.0, interval=0.1, horizon=0.5)
    assert not answer.granted
    assert tat is None
    assert answer.at == pytest.approx(100.5)  # then the start at 101.0 is within reach


def test_time_that_passed_unused_is_not_saved_up_for_a_burst() -> None:
    _, tat = reserve(90.0, now=100.0, interval=0.1, horizon=0.5)
    assert tat == pytest.approx(100.1)


def test_starts_reserved_back_to_back_never_put_more_than_n_in_one_period() -> None:
    rate = parse_rate("50/s")
    tat, starts, now = None, [], 0.0
    while len(starts) < 300:  # callers arriving every 3 ms, each reserving when it may
        answer, new = reserve(tat, now, rate.interval, 0.5)
        if answer.granted:
            starts.append(answer.at)
            tat = new
        now += 0.003
    # (less a nanosecond: the starts are sums of floats)
    most = max(sum(1 for s in starts if t <= s < t + 1.0 - 1e-9) for t in starts)
    assert most in (49, 50)  # the allowance costs 2.5% of a rate per second, no more
    # Starts seen later than admitted, by lags that differ by up to the allowance, still
    # leave 50 in a second. The worst case: a window's first start is seen the allowance
    # late and the 51st on time.
    for first, last in zip(starts, starts[50:], strict=False):
        assert last - (first + LAG_ALLOWANCE) >= 1.0 - 1e-9
    assert starts[-1] - starts[0] == pytest.approx(299 * 1.025 / 50)


def test_no_start_is_reserved_sooner_than_the_lead() -> None:
    answer, tat = reserve(None, now=100.0, interval=0.1, horizon=0.5, lead=0.2)
    assert answer.at == pytest.approx(100.2)
    assert tat == pytest.approx(100.3)
    answer, _ = reserve(100.25, now=100.0, interval=0.1, horizon=0.5, lead=0.2)
    assert answer.at == pytest.approx(100.25)
