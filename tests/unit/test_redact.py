from __future__ import annotations

import pytest

from hubbub import Hub
from hubbub._redact import redact
from hubbub.errors import ConfigurationError
from hubbub.settings import resolve
from hubbub.transports import open_transport


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:s3cret@rabbit:5672/vhost", "amqp://guest:***@rabbit:5672/vhost"),
        ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        (
            "rediss://default:s3cret@cache.example.com:6380",
            "rediss://default:***@cache.example.com:6380",
        ),
        ("REDIS://user:s3cret@host", "REDIS://user:***@host"),
        ("amqp://user:pa:ss@host", "amqp://user:***@host"),
        ("amqp://guest:p@ss@host:5672/vhost", "amqp://guest:***@host:5672/vhost"),
        ("amqps://guest:p@ss@host, amqp://u:x@y@h2", "amqps://guest:***@host, amqp://u:***@h2"),
        ("redis://localhost:6379/0?password=s3cret", "redis://localhost:6379/0?password=***"),
        (
            "redis://localhost/0?db=1&password=s3cret&x=y",
            "redis://localhost/0?db=1&password=***&x=y",
        ),
        ("beanstalk://host?token=abc&pwd=def", "beanstalk://host?token=***&pwd=***"),
    ],
)
def test_redact_masks_the_password_in_a_url(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert "s3cret" not in redact(url)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///hubbub.db",
        "sqlite:////var/lib/shop/queue.db",
        "memory://test",
        "redis://localhost:6379/0",
        "amqp://guest@rabbit//",
        "redis://localhost:6379/0?db=2&ssl=true",
        "beanstalk://localhost:11300",
    ],
)
def test_redact_leaves_a_url_without_secrets_unchanged(url: str) -> None:
    assert redact(url) == url


def test_redact_masks_every_url_in_a_sentence() -> None:
    text = "cannot reach redis://:one@a:6379 or amqp://u:two@b//, giving up"

    assert redact(text) == "cannot reach redis://:***@a:6379 or amqp://u:***@b//, giving up"


def test_redact_masks_a_password_that_contains_an_at_sign() -> None:
    # urllib and redis-py split userinfo at the last '@', so this password is "p@ss".
    assert redact("redis://:p@ss@localhost:6379/0") == "redis://:***@localhost:6379/0"


def test_a_hub_never_shows_its_broker_password() -> None:
    hub = Hub("redis://:s3cret@localhost:6379/0")
    try:
        assert repr(hub) == "<Hub broker=redis://:***@localhost:6379/0>"
    finally:
        hub.close()


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("amqp://guest:p@ss@rabbit:5672/", "amqp://guest:***@rabbit:5672/"),
        ("'amqp://u:a@b@c/' and 'amqp://v:w@z/'", "'amqp://u:***@c/' and 'amqp://v:***@z/'"),
        ("redis://h/0?db=1&api_key=s3cret&x=y", "redis://h/0?db=1&api_key=***&x=y"),
        ("redis://h/0?pass=s3cret", "redis://h/0?pass=***"),
        ("redis://h/0?access_token=s3cret#frag", "redis://h/0?access_token=***#frag"),
        ("options {'password': 's3cret', 'db': '1'}", "options {'password': '***', 'db': '1'}"),
    ],
)
def test_redact_masks_secrets_however_a_message_shows_them(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_an_error_about_a_url_never_carries_its_query_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        open_transport("redis://localhost/0?password=s3cret&bogus=1")

    assert "s3cret" not in str(caught.value)
    assert "password=***" in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def test_an_error_about_a_malformed_url_never_carries_its_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        open_transport("redis://:s3cret@[::1/0?token=t0ken")

    assert "s3cret" not in str(caught.value)
    assert "t0ken" not in str(caught.value)


def test_settings_repr_masks_broker_and_result_store_passwords() -> None:
    settings = resolve(
        {"broker": "amqp://guest:br0ker@rabbit//", "results": "redis://:st0re@cache/0"},
        environ={},
    )

    shown = repr(settings)
    assert "br0ker" not in shown
    assert "st0re" not in shown
    assert "broker='amqp://guest:***@rabbit//'" in shown
    assert "results='redis://:***@cache/0'" in shown


def test_a_hub_settings_repr_never_shows_a_password() -> None:
    hub = Hub("redis://:s3cret@localhost:6379/0")
    try:
        assert "s3cret" not in repr(hub.settings)
        assert "s3cret" not in str(hub.settings)
    finally:
        hub.close()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("text", ["x" * 1_000_000, "?" + "a" * 1_000_000, "'" + "a" * 1_000_000,
                                  "a" * 500_000 + "://"])
def test_redact_takes_linear_time_on_a_long_word(text: str) -> None:
    # A worker masks every error it logs: a quadratic pattern took 40 s on a 64 KB message,
    # blocking the worker's loop until its leases ran out (a million characters: hours).
    assert redact(text) == text
