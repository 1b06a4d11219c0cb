"""What a task does, or what an envelope claims, never kills or wedges the worker.

Each test runs hostile work beside good tasks on every broker and judges: the worker ends
normally (drain returns, so nothing is left ready, delayed or leased), the hostile item ends
with a clear reason (a FAILURE result or a dead letter), and every good task ran once.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hubbub import Hub, Limits, Retry, State, Task, WriteBackFailed
from hubbub.codecs import get_codec
from hubbub.message import Envelope, encode
from hubbub.testing import drain_async
from hubbub.transports import Outgoing
from hubbub.worker.loop import WorkerLoop
from hubbub.worker.pools import make_pool
from hubbub.worker.writes import WriteBuffer
from tests.conftest import Broker, dead_reasons, eventually, make_hub, records

GOOD = 5




async def publish_raw(hub: Hub, body: bytes, id: str, queue: str = "default") -> None:
    async def send() -> None:
        client = await hub.client()
        await client.transport.publish([Outgoing(queue, body, id)])

    await hub.bridge.run_async(send())


def raw_envelope(**fields: Any) -> dict[str, Any]:
    base = {"v": 1, "task": "x", "id": "raw", "queue": "default", "priority": 0, "eta": None,
            "expires": None, "retries": 0, "max_retries": 0, "timeout": None,
            "soft_timeout": None, "parent_id": None, "root_id": None, "group_id": None,
            "headers": {}, "created_at": 1.0, "content_type": "application/json", "args": [],
            "kwargs": {}}
    return {**base, **fields}


def counted_task(hub: Hub) -> tuple[Task[[int], int], Counter[int]]:
    """A good task that returns its argument, and how often it ran with each."""
    ran: Counter[int] = Counter()

    @hub.task
    def good(i: int) -> int:
        ran[i] += 1
        return i

    return good, ran


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


async def test_results_and_errors_that_cannot_be_stored_settle_as_failures(
        broker: Broker, tmp_path: Path) -> None:
    hub = make_hub(broker, tmp_path)
    good, ran = counted_task(hub)

    @hub.task
    def surrogate_error() -> None:
        raise ValueError("cannot open b'caf\udce9.txt'")  # a file name decoded with surrogateescape

    @hub.task
    def deep_result() -> list[Any]:
        return nested(1000)

    @hub.task
    def huge_error() -> None:
        raise ValueError("x" * 200_000)

    try:
        goods = [good.delay(i) for i in range(GOOD)]
        bad = [surrogate_error.delay(), deep_result.delay(), huge_error.delay()]
        goods += [good.delay(i) for i in range(GOOD, 2 * GOOD)]
        await drain_async(hub, pool=make_pool("async", 4), timeout=60)
        found = await records(hub, [r.id for r in goods + bad])
        assert [found[r.id].value for r in goods] == list(range(2 * GOOD))
        assert ran == dict.fromkeys(range(2 * GOOD), 1)
        for result in bad:
            assert found[result.id].state == State.FAILURE, result
        surrogate = found[bad[0].id].error
        assert "caf\\udce9" in surrogate.message
        assert len(found[bad[2].id].error.message) < 5000  # bounded in the store
        assert await dead_reasons(hub) == {}  # they ran: FAILURE results, not dead letters
    finally:
        hub.close()


async def test_a_retry_with_an_infinite_countdown_is_held_in_the_broker(
        broker: Broker, tmp_path: Path) -> None:
    hub = make_hub(broker, tmp_path)

    @hub.task(retries=1)
    def later() -> None:
        raise Retry(countdown=math.inf)

    try:
        result = later.delay()
        worker = WorkerLoop(hub, pool=make_pool("async", 2))
        running = asyncio.ensure_future(worker.run())

        async def retried() -> bool:
            assert not running.done(), "the worker ended"
            found = (await records(hub, [result.id])).get(result.id)
            return found is not None and found.state == State.RETRY

        await eventually(retried, 20)
        async def held() -> bool:
            async def read() -> Any:
                client = await hub.client()
                return await client.transport.stats(["default"])

            [stats] = await hub.bridge.run_async(read())
            return stats.delayed == 1 and stats.leased == 0 and stats.ready == 0

        await eventually(held, 20)
        worker.stop()
        await asyncio.wait_for(running, 30)
    finally:
        hub.close()


async def test_a_retry_too_large_to_send_fails_the_task_with_the_reason(
        broker: Broker, tmp_path: Path) -> None:
    limit = 4096
    hub = make_hub(broker, tmp_path, limits=Limits(max_message_size=limit))

    @hub.task(retries=3)
    def flaky(pad: str) -> None:
        raise Retry(countdown=1)

    try:
        codec = get_codec("json")
        pad = ""
        env = Envelope(flaky.name, ("",), max_retries=3)
        while len(encode(env, codec, 10 * limit)) < limit - 2:  # the first one just fits
            pad += "x"
            env = Envelope(flaky.name, (pad,), id=env.id, max_retries=3,
                           created_at=env.created_at)
        await publish_raw(hub, encode(env, codec, limit), env.id)
        await drain_async(hub, pool=make_pool("async", 2), timeout=60)
        found = (await records(hub, [env.id]))[env.id]
        assert found.state == State.FAILURE
        assert "retry could not be sent" in found.error.message
        assert env.id not in await dead_reasons(hub)  # it ran: a FAILURE, not a dead letter
    finally:
        hub.close()


async def test_a_message_that_fails_signature_checks_writes_no_result(
        broker: Broker, tmp_path: Path) -> None:
    hub = make_hub(broker, tmp_path, signing_keys={"k1": "0123456789abcdef0123"})

    @hub.task
    def work() -> str:
        return "done"

    try:
        victim = work.delay()  # pending, signed; a forged twin must not fail it
        forged = raw_envelope(task=work.name, id=victim.id)
        await publish_raw(hub, get_codec("json").encode(forged), "forged")
        await drain_async(hub, pool=make_pool("async", 2), timeout=60)
        assert victim.state == State.SUCCESS
        assert any("unsigned message refused" in r for r in (await dead_reasons(hub)).values())
    finally:
        hub.close()


async def test_a_replayed_message_of_a_finished_task_does_not_run_again(
        broker: Broker, tmp_path: Path) -> None:
    hub = make_hub(broker, tmp_path)
    ran: list[str] = []

    @hub.task
    def charge(order: str) -> str:
        ran.append(order)
        return order

    try:
        env = Envelope(charge.name, ("order-1",))
        await hub.bridge.run_async(hub.publish_async([env]))
        await drain_async(hub, pool=make_pool("async", 2), timeout=60)
        # The same bytes again, as a replay or a redelivery after the result was stored:
        await hub.bridge.run_async(hub.publish_async([env]))
        await drain_async(hub, pool=make_pool("async", 2), timeout=60)
        assert ran == ["order-1"]
    finally:
        hub.close()


async def test_envelope_fields_are_not_trusted_for_routing_or_retries(
        broker: Broker, tmp_path: Path) -> None:
    hub = make_hub(broker, tmp_path)
    attempts: Counter[str] = Counter()

    @hub.task(retries=1)
    def once_more(key: str) -> str:
        attempts[key] += 1
        if attempts[key] == 1:
            raise ValueError("first attempt fails")
        return key

    try:
        json = get_codec("json")
        # Claims another queue: its retry still comes back to the queue it was read from.
        elsewhere = raw_envelope(task=once_more.name, id="elsewhere", queue="nobody-reads",
                                 max_retries=1, args=["a"])
        empty_queue = raw_envelope(task=once_more.name, id="empty-queue", queue="", args=["b"])
        negative = raw_envelope(task=once_more.name, id="negative", retries=-5, args=["c"])
        for body in (elsewhere, empty_queue, negative):
            await publish_raw(hub, json.encode(body), body["id"])
        await drain_async(hub, pool=make_pool("async", 2), timeout=60)
        found = await records(hub, ["elsewhere"])
        assert found["elsewhere"].state == State.SUCCESS
        assert attempts["a"] == 2
        reasons = await dead_reasons(hub)
        assert "field 'queue' is empty" in reasons["empty-queue"]
        assert "field 'retries' is negative" in reasons["negative"]
        assert attempts["b"] == attempts["c"] == 0
    finally:
        hub.close()


async def test_a_worker_whose_write_back_breaks_stops_at_once_with_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}", lease=5)

    @hub.task
    def work() -> str:
        return "done"

    async def broken(self: WriteBuffer, batch: object) -> None:
        raise RuntimeError("the write-back machinery itself is broken")

    # Not a broker or store outage (those are retried): a bug in the flusher itself.
    monkeypatch.setattr(WriteBuffer, "_flush", broken)
    try:
        result = work.delay()
        worker = WorkerLoop(hub, pool=make_pool("async", 2))
        with pytest.raises(WriteBackFailed, match="machinery itself is broken"):
            await asyncio.wait_for(worker.run(), 30)
        assert result.state != State.SUCCESS  # nothing acked: it runs again after a restart
        assert worker.abandoned == 0
    finally:
        hub.close()


def _malformed_envelopes(task: str) -> dict[str, bytes]:
    """Bodies no worker may run, each named by what is wrong with it."""
    json = get_codec("json")

    def env(**fields: Any) -> bytes:
        return json.encode(raw_envelope(**{"task": task, **fields}))

    def without(name: str) -> bytes:
        body = raw_envelope(task=task)
        del body[name]
        return json.encode(body)

    return {
        "not-json": b"\x00\xffnot json at all",
        "json-list": b"[1, 2, 3]",
        "json-string": b'"a string"',
        "empty": b"",
        "nested-deep": b"[" * 100_000 + b"]" * 100_000,
        "version-99": env(v=99),
        "version-bool": env(v=True),
        "no-id": without("id"),
        "no-task": without("task"),
        "no-args": without("args"),
        "id-number": env(id=7),
        "task-null": env(task=None),
        "retries-text": env(retries="3"),
        "retries-bool": env(retries=True),
        "retries-negative": env(retries=-1),
        "priority-float": env(priority=1.5),
        "headers-list": env(headers=[]),
        "args-object": env(args={"x": 1}),
        "kwargs-list": env(kwargs=[1]),
        "kwargs-int-keys": b'{"v": 1, "task": "%s", "id": "x", "kwargs": {"1": 1}, "args": 5}'
                           % task.encode(),
        "empty-id": env(id=""),
        "empty-queue": env(queue=""),
        "pickle-content": env(content_type="application/x-python-pickle", payload="gASVAA=="),
        "bad-payload": env(content_type="application/msgpack", payload="!!not base64!!"),
        "unknown-task": json.encode(raw_envelope(task="nobody.knows.this")),
        "wrong-arguments": env(args=[1, 2, 3]),
        "signed-without-keys": b"hubbub-sig1 k1 abc\n" + env(),
    }


async def test_malformed_envelopes_are_dead_lettered_beside_good_tasks(
        broker: Broker, tmp_path: Path) -> None:
    hub = make_hub(broker, tmp_path)
    good, ran = counted_task(hub)

    try:
        bad = _malformed_envelopes(good.name)
        goods = [good.delay(i) for i in range(GOOD)]
        for name, body in bad.items():
            await publish_raw(hub, body, f"bad-{name}")
        goods += [good.delay(i) for i in range(GOOD, 2 * GOOD)]
        await drain_async(hub, pool=make_pool("async", 4), timeout=60)
        assert ran == dict.fromkeys(range(2 * GOOD), 1)
        found = await records(hub, [r.id for r in goods])
        assert all(found[r.id].state == State.SUCCESS for r in goods)
        reasons = await dead_reasons(hub)
        assert len(reasons) == len(bad), sorted(set(bad) - {k[4:] for k in reasons})
        assert all(reason for reason in reasons.values())
    finally:
        hub.close()
