"""kill -9 of the bridge worker mid-task: the Celery message runs again, never lost (Redis,
where the bridge keeps the lease, and RabbitMQ, where the connection does)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from contextlib import closing
from pathlib import Path
from types import ModuleType

import pytest
import redis

from tests.compat.conftest import AMQP, REDIS, Names, celery_app, require_server, start, stop
from tests.worker.scratch import wait_until


def _bridge(app: ModuleType, names: Names, broker: str, tmp_path: Path, log: str,
            seconds: str) -> subprocess.Popen[bytes]:
    return start(["-m", "hubbub", "worker", "-A", f"{app.__name__}:hub", "--pool", "threads",
                  "-c", "1", "--lease", "2", "--celery-queue", names.queue,
                  "--celery-broker", broker, "--celery-results", REDIS],
                 tmp_path, tmp_path / log, SLOW_ADD_SECONDS=seconds)


def _starts(marker: Path) -> list[str]:
    return marker.read_text().split() if marker.exists() else []


@pytest.mark.parametrize("broker", [REDIS, AMQP], ids=["redis", "amqp"])
def test_kill_9_of_the_bridge_mid_task_runs_the_celery_message_again(
        app: ModuleType, names: Names, tmp_path: Path, broker: str) -> None:
    require_server("redis")
    if broker == AMQP:
        require_server("amqp")
    marker = tmp_path / "starts"
    leased = f"hubbub-celery:{{{names.queue}}}:leased"
    with celery_app(broker, names.queue) as celery, \
            closing(redis.Redis.from_url(REDIS)) as client:
        sent = celery.send_task("shop.slow_add", (2, 3, str(marker)))
        names.ids.append(sent.id)
        first = _bridge(app, names, broker, tmp_path, "first.log", "60")
        try:
            wait_until(lambda: len(_starts(marker)) == 1, "the task started", timeout=30)
            if broker == REDIS:  # held by the bridge, not in Celery's list
                assert client.zcard(leased) == 1
                assert client.llen(names.queue) == 0
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
        finally:
            stop(first)
        second = _bridge(app, names, broker, tmp_path, "second.log", "0.1")
        try:
            assert sent.get(timeout=30) == 5, (tmp_path / "second.log").read_text()
            starts = _starts(marker)
            assert len(starts) == 2
            assert starts[0] != starts[1]  # the second worker's process ran it again
            wait_until(lambda: client.zcard(leased) == 0, "the lease settled")  # (0 on amqp)
        finally:
            stop(second)


def test_a_celery_message_that_kills_every_bridge_is_dead_lettered_as_poison(
        app: ModuleType, names: Names, tmp_path: Path) -> None:
    require_server("redis")
    marker = tmp_path / "deaths"
    dead_key = f"hubbub-celery:{{{names.queue}}}:dead"
    with celery_app(REDIS, names.queue) as celery, \
            closing(redis.Redis.from_url(REDIS)) as client:
        sent = celery.send_task("shop.die", (str(marker),))
        names.ids.append(sent.id)
        for round_ in range(3):  # max_deliveries=2: two deaths, then the third refuses it
            proc = start(["-m", "hubbub", "worker", "-A", f"{app.__name__}:hub", "--pool",
                          "threads", "-c", "1", "--lease", "1", "--celery-queue", names.queue,
                          "--celery-broker", REDIS, "--celery-results", REDIS],
                         tmp_path, tmp_path / f"w{round_}.log", HUBBUB_MAX_DELIVERIES="2")
            try:
                if round_ < 2:
                    wait_until(lambda p=proc: p.poll() is not None,
                               "the task killed the worker", timeout=30)
                else:
                    wait_until(lambda: client.llen(dead_key) == 1, "dead-lettered as poison",
                               timeout=30)
            finally:
                stop(proc)
        assert _starts(marker) == ["died", "died"]
        [record] = client.lrange(dead_key, 0, -1)
        assert "poison" in json.loads(record)["reason"]
        assert json.loads(record)["id"] == sent.id


def test_the_bridge_runs_celery_tasks_in_prefork_children(app: ModuleType, names: Names,
                                                          tmp_path: Path) -> None:
    require_server("redis")
    with celery_app(REDIS, names.queue) as celery:
        sent = celery.send_task("shop.add", (20, 22))
        names.ids.append(sent.id)
        proc = start(["-m", "hubbub", "worker", "-A", f"{app.__name__}:hub", "--pool",
                      "prefork", "-c", "1", "--celery-queue", names.queue, "--celery-broker",
                      REDIS, "--celery-results", REDIS], tmp_path, tmp_path / "prefork.log")
        try:
            assert sent.get(timeout=30) == 42, (tmp_path / "prefork.log").read_text()
        finally:
            stop(proc)
