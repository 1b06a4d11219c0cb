"""The bridge on Redis: Celery producers, hubbub workers, Celery callers reading results."""

from __future__ import annotations

import json
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
import redis

from tests.compat.conftest import REDIS, Names, bridge_worker, celery_app, require_server
from tests.worker.scratch import wait_until


@pytest.fixture(autouse=True)
def _server() -> None:
    require_server("redis")


def _dead(queue: str) -> list[dict[str, object]]:
    client = redis.Redis.from_url(REDIS)
    try:
        return [json.loads(x) for x in client.lrange(f"hubbub-celery:{{{queue}}}:dead", 0, -1)]
    finally:
        client.close()


def test_celery_send_task_runs_on_the_bridge_and_celery_reads_the_result(
        app: ModuleType, names: Names) -> None:
    with celery_app(REDIS, names.queue) as celery:
        sent = celery.send_task("shop.add", (2, 3))
        names.ids.append(sent.id)
        with bridge_worker(app, names.queue, REDIS):
            assert sent.get(timeout=10) == 5
        assert sent.status == "SUCCESS"


def test_a_task_failing_for_good_is_a_failure_celery_raises(
        app: ModuleType, names: Names) -> None:
    with celery_app(REDIS, names.queue) as celery:
        sent = celery.send_task("shop.fail")
        names.ids.append(sent.id)
        with bridge_worker(app, names.queue, REDIS), pytest.raises(ValueError, match="no stock"):
            sent.get(timeout=10)


def test_countdown_is_held_in_redis_until_due(app: ModuleType, names: Names) -> None:
    with celery_app(REDIS, names.queue) as celery:
        sent = celery.send_task("shop.add", (1, 1), countdown=2)
        names.ids.append(sent.id)
        began = time.time()
        with bridge_worker(app, names.queue, REDIS):
            assert sent.get(timeout=10) == 2
        assert time.time() - began >= 1.9


def test_an_expired_celery_message_does_not_run(app: ModuleType, names: Names,
                                                tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    with closing(redis.Redis.from_url(REDIS)) as client, \
            celery_app(REDIS, names.queue) as celery:
        past = datetime.now(UTC) - timedelta(seconds=1)
        stale = celery.send_task("shop.slow_add", (1, 1, str(marker)), expires=past)
        fresh = celery.send_task("shop.add", (2, 2))
        names.ids += [stale.id, fresh.id]
        with bridge_worker(app, names.queue, REDIS):
            assert fresh.get(timeout=10) == 4
            wait_until(lambda: client.llen(names.queue) == 0
                       and client.zcard(f"hubbub-celery:{{{names.queue}}}:leased") == 0,
                       "both messages acked")
            from celery.exceptions import TaskRevokedError

            with pytest.raises(TaskRevokedError):  # as a Celery worker reports it
                stale.get(timeout=10)
        assert not marker.exists()


def test_pickle_is_refused_with_the_reason_and_never_unpickled(
        app: ModuleType, names: Names) -> None:
    with celery_app(REDIS, names.queue) as celery:
        celery.conf.update(task_serializer="pickle", accept_content=["json", "pickle"])
        sent = celery.send_task("shop.add", (2, 3), serializer="pickle")
        names.ids.append(sent.id)
        with bridge_worker(app, names.queue, REDIS):
            wait_until(lambda: len(_dead(names.queue)) == 1, "the pickled message dead-lettered")
            [dead] = _dead(names.queue)
            assert dead["id"] == sent.id
            assert "pickle" in str(dead["reason"])
            assert "never unpickles" in str(dead["reason"])
            with pytest.raises(Exception, match="pickle"):
                sent.get(timeout=10)  # the Celery caller learns why, instead of waiting


def test_a_celery_chain_runs_step_after_step_on_the_bridge(app: ModuleType,
                                                           names: Names) -> None:
    from celery import chain

    with celery_app(REDIS, names.queue) as celery:
        result = chain(celery.signature("shop.add", (1, 2)),
                       celery.signature("shop.add", (10,)),
                       celery.signature("shop.add", (100, 1), immutable=True)).apply_async()
        names.ids += [result.id, result.parent.id, result.parent.parent.id]
        with bridge_worker(app, names.queue, REDIS):
            assert result.get(timeout=15) == 101
            assert result.parent.get(timeout=5) == 13  # add(3, 10): the result went first
            assert result.parent.parent.get(timeout=5) == 3
            meta = celery.backend.get_task_meta(result.parent.id)
            assert meta["parent_id"] == result.parent.parent.id


def test_callbacks_are_dead_lettered_saying_the_bridge_does_not_run_that_canvas(
        app: ModuleType, names: Names) -> None:
    with celery_app(REDIS, names.queue) as celery:
        sent = celery.signature("shop.add", (1, 2)).apply_async(
            link=celery.signature("shop.add", (10,)))
        names.ids.append(sent.id)
        with bridge_worker(app, names.queue, REDIS):
            wait_until(lambda: len(_dead(names.queue)) == 1, "the message dead-lettered")
            [dead] = _dead(names.queue)
            assert dead["task"] == "shop.add"
            assert dead["id"] == sent.id
            assert "canvas (callbacks)" in str(dead["reason"])
            assert "does not support" in str(dead["reason"])
            with pytest.raises(Exception, match="canvas"):
                sent.get(timeout=10)


def test_a_retry_goes_back_to_celerys_queue_and_runs_again(app: ModuleType, names: Names,
                                                           tmp_path: Path) -> None:
    with celery_app(REDIS, names.queue) as celery:
        sent = celery.send_task("shop.fail")  # retries=1: two runs, then FAILURE
        names.ids.append(sent.id)
        seen: list[str] = []
        client = redis.Redis.from_url(REDIS)
        pubsub = client.pubsub()
        pubsub.subscribe(f"celery-task-meta-{sent.id}")
        try:
            with bridge_worker(app, names.queue, REDIS):
                with pytest.raises(ValueError, match="no stock"):
                    sent.get(timeout=15)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and "FAILURE" not in seen:
                    message = pubsub.get_message(timeout=0.2)
                    if message and message["type"] == "message":
                        seen.append(json.loads(message["data"])["status"])
        finally:
            pubsub.close()
            client.close()
        assert seen == ["RETRY", "FAILURE"]


def test_a_task_longer_than_its_lease_runs_once(app: ModuleType, names: Names, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOW_ADD_SECONDS", "5")
    marker = tmp_path / "starts"
    with celery_app(REDIS, names.queue) as celery:
        sent = celery.send_task("shop.slow_add", (2, 3, str(marker)))
        names.ids.append(sent.id)
        with bridge_worker(app, names.queue, REDIS, lease=2):  # renewed every 2/3 s
            assert sent.get(timeout=20) == 5
        assert len(marker.read_text().split()) == 1


def test_the_bridge_refuses_to_start_for_a_hub_that_requires_signing() -> None:
    from hubbub import Hub
    from hubbub.compat.celery.bridge import celery_lane
    from hubbub.errors import ConfigurationError

    hub = Hub("memory://", signing_keys={"k1": "s3cret-s3cret-s3cret-0"})
    try:
        with pytest.raises(ConfigurationError, match="unsigned Celery messages") as caught:
            celery_lane(hub, "celery", broker=REDIS)
        assert "s3cret" not in str(caught.value)  # the key is never shown
    finally:
        hub.close()


def test_a_celery_group_runs_and_its_group_result_collects(app: ModuleType,
                                                           names: Names) -> None:
    from celery import group

    with celery_app(REDIS, names.queue) as celery:
        result = group(celery.signature("shop.add", (1, 2)),
                       celery.signature("shop.add", (3, 4))).apply_async()
        names.ids += [r.id for r in result.results]
        with bridge_worker(app, names.queue, REDIS):
            assert result.get(timeout=10) == [3, 7]


def test_ignore_result_writes_no_celery_result(app: ModuleType, names: Names, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOW_ADD_SECONDS", "0")
    marker = tmp_path / "starts"
    leased = f"hubbub-celery:{{{names.queue}}}:leased"
    with closing(redis.Redis.from_url(REDIS)) as client, \
            celery_app(REDIS, names.queue) as celery:
        quiet = celery.send_task("shop.slow_add", (1, 1, str(marker)), ignore_result=True)
        names.ids.append(quiet.id)
        with bridge_worker(app, names.queue, REDIS):
            wait_until(lambda: marker.exists() and client.llen(names.queue) == 0
                       and client.zcard(leased) == 0, "the task ran and was acked")
        assert client.exists(f"celery-task-meta-{quiet.id}") == 0


async def test_a_late_revoked_does_not_hide_a_finished_result() -> None:
    from hubbub.compat.celery.results import CeleryResultWriter
    from hubbub.results.base import State

    task_id = f"hbc-late-{uuid.uuid4().hex}"
    writer = CeleryResultWriter(REDIS)
    await writer.connect()
    try:
        await writer.write(task_id, State.SUCCESS, 5)
        await writer.write(task_id, State.REVOKED, None, keep_done=True)
        client = writer._client
        assert client is not None
        assert json.loads(await client.get(f"celery-task-meta-{task_id}"))["status"] == "SUCCESS"
        await writer.write(task_id, State.REVOKED, None)  # without keep_done it replaces
        assert json.loads(await client.get(f"celery-task-meta-{task_id}"))["status"] == "REVOKED"
    finally:
        if writer._client is not None:
            await writer._client.delete(f"celery-task-meta-{task_id}")
        await writer.close()
