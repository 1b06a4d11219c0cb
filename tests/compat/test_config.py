"""Configuring the bridge: where Celery's broker and results come from, clear refusals, and
secrets never shown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from hubbub import Hub
from hubbub.cli import main
from hubbub.cli._common import settings_lines
from hubbub.compat.celery.bridge import celery_lane
from hubbub.compat.celery.producer import broker_url
from hubbub.errors import ConfigurationError


@pytest.fixture
def hub() -> Iterator[Hub]:
    made = Hub("memory://", celery_broker="redis://:hunter2secret@127.0.0.1:6379/0",
               celery_results="redis://:hunter2secret@127.0.0.1:6379/1")
    try:
        yield made
    finally:
        made.close()


def test_celery_urls_are_masked_in_settings_and_the_banner(hub: Hub) -> None:
    assert "hunter2secret" not in repr(hub.settings)
    lines = "\n".join(settings_lines(hub))
    assert "celery_broker" in lines
    assert "hunter2secret" not in lines


def test_celery_broker_comes_from_the_setting_else_the_hubs_own_broker(hub: Hub) -> None:
    assert broker_url(hub.settings) == "redis://:hunter2secret@127.0.0.1:6379/0"
    assert broker_url(hub.settings, "pyamqp://guest:guest@h//") == "amqp://guest:guest@h//"
    own = Hub("redis://127.0.0.1:6379/3")
    try:
        assert broker_url(own.settings) == "redis://127.0.0.1:6379/3"
    finally:
        own.close()


def test_the_environment_names_celerys_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBBUB_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672/")
    made = Hub("memory://")
    try:
        assert made.settings.celery_broker == "amqp://guest:guest@127.0.0.1:5672/"
        assert made.settings.source("celery_broker") == "environment"
    finally:
        made.close()


def test_a_broker_celery_cannot_use_is_refused_with_the_fix() -> None:
    made = Hub("memory://")
    try:
        with pytest.raises(ConfigurationError, match="--celery-broker URL"):
            celery_lane(made, "celery")
    finally:
        made.close()


def test_results_only_go_to_a_redis_backend(hub: Hub) -> None:
    with pytest.raises(ConfigurationError, match="Redis result backend only") as caught:
        celery_lane(hub, "celery", results="db+postgresql://u:topsecretpw@db/celery")
    assert "topsecretpw" not in str(caught.value)


def test_a_lane_spec_gives_the_celery_queues_their_own_pool(hub: Hub) -> None:
    lane = celery_lane(hub, "celery,mail=threads:3")
    assert lane.queues == ["celery", "mail"]
    assert lane.pool.kind == "threads"
    assert lane.pool.concurrency == 3
    assert lane.source is not None
    assert lane.source.queues == ("celery", "mail")
    with pytest.raises(ConfigurationError, match="names no queue"):
        celery_lane(hub, " , ")


def test_worker_help_lists_the_bridge_options() -> None:
    shown = CliRunner().invoke(main, ["worker", "--help"]).output
    for option in ("--celery-queue", "--celery-broker", "--celery-results",
                   "--celery-result-expires"):
        assert option in shown
