"""``hub.send_task(..., protocol="celery")``: run by a real ``celery worker`` process."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub import Hub
from tests.compat.conftest import AMQP, REDIS, Names, celery_app, require_server, start, stop

CELERY_SIDE = textwrap.dedent('''
    import os
    from celery import Celery

    app = Celery("shop", broker=os.environ["CELERY_BROKER"], backend=os.environ["CELERY_BACKEND"])
    app.conf.update(task_default_queue=os.environ["CELERY_QUEUE"], accept_content=["json"],
                    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
                    worker_enable_remote_control=False)  # no shared pidbox keys

    @app.task(name="shop.add")
    def add(x, y):
        return x + y
''')


@pytest.fixture(params=["redis", "amqp"])
def broker(request: pytest.FixtureRequest) -> str:
    require_server("redis")
    if request.param == "amqp":
        require_server("amqp")
        return AMQP
    return REDIS


@pytest.fixture
def celery_worker(broker: str, names: Names, tmp_path: Path) -> Iterator[Path]:
    """A real Celery worker (solo pool) on ``names.queue``; stopped when the test ends."""
    (tmp_path / "celery_side.py").write_text(CELERY_SIDE)
    log = tmp_path / "celery.log"
    proc = start(["-m", "celery", "-A", "celery_side", "worker", "-Q", names.queue,
                  "--pool", "solo", "-c", "1", "--without-heartbeat", "--without-gossip",
                  "--without-mingle", "-l", "info"], tmp_path, log,
                 CELERY_BROKER=broker, CELERY_BACKEND=REDIS, CELERY_QUEUE=names.queue)
    try:
        yield log
    finally:
        stop(proc)


def test_send_task_with_the_celery_protocol_is_run_by_a_celery_worker(
        broker: str, names: Names, celery_worker: Path, tmp_path: Path) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}", celery_broker=broker)
    try:
        sent = hub.send_task("shop.add", (2, 3), protocol="celery", queue=names.queue)
        later = hub.send_task("shop.add", (), {"x": 1, "y": 1}, protocol="celery",
                              queue=names.queue, countdown=2)
        names.ids += [sent.id, later.id]
        began = time.time()
    finally:
        hub.close()
    with celery_app(broker, names.queue) as celery:
        assert celery.AsyncResult(sent.id).get(timeout=30) == 5, celery_worker.read_text()
        assert celery.AsyncResult(later.id).get(timeout=30) == 2
        assert time.time() - began >= 1.9  # the Celery worker honoured the eta


def test_send_task_refuses_a_broker_celery_cannot_share(tmp_path: Path) -> None:
    from hubbub.errors import ConfigurationError

    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        with pytest.raises(ConfigurationError, match="--celery-broker"):
            hub.send_task("shop.add", (2, 3), protocol="celery")
    finally:
        hub.close()
