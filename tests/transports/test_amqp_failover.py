"""The RabbitMQ transport's failover over a cluster's URLs, shared by its async connection and
its sync publisher: which URL is tried, when and how long it pauses, and the error at the
deadline. Pure logic: the caller connects, sleeps and reads the clock, so the tests do."""

from __future__ import annotations

import pytest

from hubbub.errors import TransportUnavailable
from hubbub.transports._amqp_failover import MAX_PAUSE, ConnectAttempt, Failover

URLS = ["amqp://u:pa55@a:5672/", "amqp://u:pa55@b:5672/", "amqp://u:pa55@c:5672/"]
FAR = 1e9  # a deadline no test reaches


def fail_round(attempt: ConnectAttempt, now: float = 0.0) -> tuple[list[str], float]:
    """Fail every URL up to the next pause; the URLs tried and that pause."""
    tried: list[str] = []
    while True:
        tried.append(attempt.url)
        attempt.failed(ConnectionRefusedError("refused"))
        pause = attempt.backoff(now)
        if pause:
            return tried, pause


def test_urls_are_tried_in_turn_with_no_pause_inside_a_round() -> None:
    attempt = Failover(URLS).attempt(FAR)
    tried = []
    pauses = []
    for _ in range(7):
        tried.append(attempt.url)
        attempt.failed(ConnectionRefusedError("refused"))
        pauses.append(attempt.backoff(0.0))

    assert tried == [URLS[0], URLS[1], URLS[2], URLS[0], URLS[1], URLS[2], URLS[0]]
    assert [p > 0 for p in pauses] == [False, False, True, False, False, True, False]


def test_a_new_attempt_starts_at_the_url_the_last_one_ended_on() -> None:
    failover = Failover(URLS)
    first = failover.attempt(FAR)
    first.failed(ConnectionRefusedError("a is down"))  # a failed; b connects
    assert first.url == URLS[1]

    second = failover.attempt(FAR)  # b is lost later: b again, then c, then a
    tried, _ = fail_round(second)

    assert tried == [URLS[1], URLS[2]]
    assert second.url == URLS[0]
    assert failover.attempt(FAR).index == 0


def test_the_pause_doubles_every_round_up_to_two_seconds() -> None:
    attempt = Failover(URLS[:1]).attempt(FAR)

    pauses = [fail_round(attempt)[1] for _ in range(9)]

    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    assert MAX_PAUSE == 2.0


def test_each_attempt_starts_its_backoff_afresh() -> None:
    failover = Failover(URLS[:2])
    for _ in range(4):
        fail_round(failover.attempt(FAR))

    assert fail_round(failover.attempt(FAR))[1] == 0.05


def test_a_pause_that_would_pass_the_deadline_fails_naming_only_the_last_round() -> None:
    attempt = Failover(URLS[:2]).attempt(deadline=10.0)
    errors = iter(ConnectionRefusedError(f"refused #{n}") for n in range(1, 7))

    def fail_one_round(now: float) -> float:
        attempt.failed(next(errors))
        assert attempt.backoff(now) == 0.0
        attempt.failed(next(errors))
        return attempt.backoff(now)

    assert fail_one_round(now=0.0) == 0.05
    assert fail_one_round(now=9.9) == 0.1  # ends exactly at the deadline: still waits
    with pytest.raises(TransportUnavailable) as caught:
        fail_one_round(now=9.9)  # 0.2 s more would pass it

    assert str(caught.value) == (
        "RabbitMQ cannot be reached (amqp://u:***@a:5672/: refused #5;"
        " amqp://u:***@b:5672/: refused #6); is it running and are the credentials right?"
    )


def test_the_deadline_is_looked_at_only_when_a_round_ends() -> None:
    attempt = Failover(URLS).attempt(deadline=1.0)
    attempt.failed(ConnectionRefusedError("refused"))

    assert attempt.backoff(now=5.0) == 0.0  # b and c are still tried past the deadline
    attempt.failed(ConnectionRefusedError("refused"))
    assert attempt.backoff(now=5.0) == 0.0
    attempt.failed(ConnectionRefusedError("refused"))
    with pytest.raises(TransportUnavailable):
        attempt.backoff(now=5.0)


def test_an_attempt_started_midway_ends_its_first_round_at_the_end_of_the_list() -> None:
    failover = Failover(URLS)
    failover.attempt(FAR).failed(ConnectionRefusedError("a is down"))
    attempt = failover.attempt(deadline=0.0)

    attempt.failed(ConnectionRefusedError("b is down"))
    assert attempt.backoff(now=0.0) == 0.0
    attempt.failed(ConnectionRefusedError("c is down"))
    with pytest.raises(TransportUnavailable) as caught:
        attempt.backoff(now=0.0)

    assert str(caught.value) == (
        "RabbitMQ cannot be reached (amqp://u:***@b:5672/: b is down;"
        " amqp://u:***@c:5672/: c is down); is it running and are the credentials right?"
    )


def test_passwords_never_show_in_where_or_in_the_error() -> None:
    urls = ["amqp://u:s3cr3t@a:5672/?password=t0p", "amqps://u:p@ss@b/v"]
    attempt = Failover(urls).attempt(deadline=0.0)
    wheres = []
    for url in urls:  # drivers put the URL they were given into their errors
        wheres.append(attempt.where)
        attempt.failed(OSError(f"cannot connect to {url}"))
    with pytest.raises(TransportUnavailable) as caught:
        attempt.backoff(now=0.0)

    assert attempt.url == urls[0]  # the driver still gets the password
    shown = " ".join([*wheres, str(caught.value)])
    for secret in ("s3cr3t", "t0p", "ss@b", ":p@"):
        assert secret not in shown
    assert wheres == ["amqp://u:***@a:5672/?password=***", "amqps://u:***@b/v"]


def test_an_error_without_text_is_named_by_its_type() -> None:
    attempt = Failover(URLS[:1]).attempt(deadline=0.0)
    attempt.failed(TimeoutError())

    with pytest.raises(TransportUnavailable, match=r"\(amqp://u:\*\*\*@a:5672/: TimeoutError\)"):
        attempt.backoff(now=0.0)
