from __future__ import annotations

import pytest

from hubbub import Hub
from hubbub._redact import redact


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
