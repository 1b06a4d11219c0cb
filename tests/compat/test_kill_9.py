"""kill -9 of the bridge worker mid-task on Redis: the Celery message runs again, never lost."""

from __future__ import annotations

import os
import signal
from contextlib import closing
from pathlib import Path
from types import ModuleType

import redis

from tests.compat.conftest import REDIS, Names, celery_app, require_server, start, stop
from tests.worker.scratch import wait_until


def _bridge(app: ModuleType, names: Names, tmp_path: Path, log: str, seconds: str):  # type: ignore[no-untyped-def]
    return start(["-m", "hubbub", "worker", "-A", f"{app.__name__}:hub", "--pool", "threads",
                  "-c", "1", "--lease", "2", "--celery-queue", names.queue,
                  "--celery-broker", REDIS, "--celery-results", REDIS],
                 tmp_path, tmp_path / log, SLOW_ADD_SECONDS=seconds)


def _starts(marker: Path) -> list[str]:
    return marker.read_text().split() if marker.exists() else []


def test_kill_9_of_the_bridge_mid_task_runs_the_celery_message_again(
        app: ModuleType, names: Names, tmp_path: Path) -> None:
    require_server("redis")
    marker = tmp_path / "starts"
    leased = f"hubbub-celery:{{{names.queue}}}:leased"
    with celery_app(REDIS, names.queue) as celery, \
            closing(redis.Redis.from_url(REDIS)) as client:
        sent = celery.send_task("shop.slow_add", (2, 3, str(marker)))
        names.ids.append(sent.id)
        first = _bridge(app, names, tmp_path, "first.log", "60")
        try:
            wait_until(lambda: len(_starts(marker)) == 1, "the task started", timeout=30)
            assert client.zcard(leased) == 1  # held by the bridge, not in Celery's list
            assert client.llen(names.queue) == 0
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
        finally:
            stop(first)
        second = _bridge(app, names, tmp_path, "second.log", "0.1")
        try:
            assert sent.get(timeout=30) == 5, (tmp_path / "second.log").read_text()
            starts = _starts(marker)
            assert len(starts) == 2
            assert starts[0] != starts[1]  # the second worker's process ran it again
            wait_until(lambda: client.zcard(leased) == 0, "the lease settled")
        finally:
            stop(second)
