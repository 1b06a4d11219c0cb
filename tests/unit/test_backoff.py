from __future__ import annotations

import pytest

from hubbub.worker.settlement import backoff


@pytest.mark.parametrize(("retries", "delay"), [(0, 1.5), (1, 3.0), (2, 6.0), (3, 12.0)])
def test_backoff_without_jitter_doubles_each_retry(retries: int, delay: float) -> None:
    assert backoff(1.5, 600.0, retries, jitter=False) == delay


def test_backoff_is_capped_at_the_ceiling() -> None:
    assert backoff(1.0, 60.0, 6, jitter=False) == 60.0
    assert backoff(1.0, 60.0, 30, jitter=False) == 60.0


def test_backoff_with_jitter_stays_between_half_and_all_of_the_delay() -> None:
    draws = [backoff(2.0, 600.0, 3, jitter=True) for _ in range(500)]

    assert all(8.0 <= d <= 16.0 for d in draws)
    assert len(set(draws)) > 1


def test_backoff_with_jitter_at_the_ceiling_stays_under_the_ceiling() -> None:
    draws = [backoff(1.0, 60.0, 20, jitter=True) for _ in range(500)]

    assert all(30.0 <= d <= 60.0 for d in draws)


def test_backoff_of_zero_base_is_zero() -> None:
    assert backoff(0.0, 60.0, 5, jitter=True) == 0.0


def test_backoff_after_very_many_retries_is_the_ceiling() -> None:
    assert backoff(1.0, 600.0, 1100, jitter=False) == 600.0
