"""Remote control against real in-process workers, on every broker: two workers answer, each
about itself; shutdown stops one gracefully while the other serves; pool grow raises the
running count; a gone worker times out with a clear message; a bad command hurts nobody."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub import Hub
from hubbub.control.commands import ControlTimeout
from hubbub.errors import TaskRevoked
from hubbub.worker.lane import Lane
from hubbub.worker.pools.threads import ThreadPool
from tests.conftest import Broker, make_hub
from tests.control.fleet import Gate, fleet
from tests.worker.scratch import wait_until


@pytest.fixture
def hub(broker: Broker, tmp_path: Path) -> Iterator[Hub]:
    """A hub on each broker in turn (its own namespace; results in SQLite where the broker
    keeps none)."""
    h = make_hub(broker, tmp_path)
    # Replies come at once when all is well (the wait ends when every worker answered);
    # a loaded test machine must not turn a slow answer into a failure.
    h.control.timeout = 10
    try:
        yield h
    finally:
        h.close()


def test_ping_reaches_every_worker_or_only_those_addressed(hub: Hub) -> None:
    with fleet(hub, {"w1": [(["a"], "threads", 1)], "w2": [(["b"], "threads", 1)]}):
        replies = hub.control.ping()
        assert [(r.worker, r.value, r.error) for r in replies] == [("w1", "pong", None),
                                                                   ("w2", "pong", None)]
        assert [r.worker for r in hub.control.ping(destination=["w2"])] == ["w2"]


def test_inspect_active_lists_a_long_task_on_the_worker_running_it(hub: Hub) -> None:
    gate = Gate()

    @hub.task(queue="a")
    def long(order: str, size: int) -> str:
        gate.wait()
        return order

    with fleet(hub, {"w1": [(["a"], "threads", 2)], "w2": [(["b"], "threads", 2)]}):
        result = long.delay("order-17", size=3)
        wait_until(lambda: gate.entered == 1, "task started")
        active = {r.worker: r.value for r in hub.control.inspect().active()}
        assert active["w2"] == []
        [task] = active["w1"]
        assert (task.id, task.name, task.queue, task.lane) == (result.id, long.name, "a", "a")
        assert "'order-17'" in task.args
        assert "size=3" in task.args
        assert task.started_at is not None
        assert hub.control.inspect().reserved()[0].value == []
        gate.open()
        assert result.get(timeout=10) == "order-17"
        assert hub.control.inspect(destination=["w1"]).active()[0].value == []


def test_reserved_lists_held_tasks_waiting_for_a_slot(hub: Hub) -> None:
    gate = Gate()

    @hub.task(queue="a")
    def hold() -> None:
        gate.wait()

    with fleet(hub, {"w1": [(["a"], "threads", 1)]}):
        first, second = hold.delay(), hold.delay()
        wait_until(lambda: gate.entered == 1, "first started")

        def reserved_ids() -> list[str]:
            return [t.id for t in hub.control.inspect().reserved()[0].value]

        wait_until(lambda: reserved_ids() == [second.id], "second reserved")
        assert [t.id for t in hub.control.inspect().active()[0].value] == [first.id]
        assert hub.control.inspect().scheduled()[0].value == []
        gate.open()
        first.get(timeout=10)
        second.get(timeout=10)


def test_registered_stats_and_conf_describe_the_worker_without_secrets() -> None:
    secret = "s3cret-signing-key-0123456789"
    hub = Hub(f"memory://control-{uuid.uuid4().hex[:10]}", signing_keys={"k1": secret})
    hub.control.timeout = 10  # see the hub fixture
    try:
        @hub.task
        def add(x: int, y: int) -> int:
            return x + y

        with fleet(hub, {"w1": [(["default"], "threads", 3)]}):
            assert add.delay(1, 2).get(timeout=10) == 3
            [registered] = hub.control.inspect().registered()
            assert add.name in registered.value
            [stats] = hub.control.inspect().stats()
            assert stats.value["processed"] == 1
            assert stats.value["lanes"] == [{"queues": ["default"], "pool": "threads",
                                             "concurrency": 3, "running": 0, "held": 0,
                                             "prefetch": 3, "autoscale": None}]
            assert stats.value["uptime"] >= 0
            [conf] = hub.control.inspect().conf()
            assert conf.value["signing_keys"] == ["k1"]
            assert conf.value["worker.name"] == "w1"
            assert secret not in json.dumps(conf.value)
    finally:
        hub.close()


def test_shutdown_of_one_worker_lets_its_task_finish_while_the_other_keeps_serving(
    hub: Hub,
) -> None:
    gate = Gate()

    @hub.task
    def slow() -> str:
        gate.wait()
        return "finished"

    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    with fleet(hub, {"w1": [(["default"], "threads", 1)], "w2": [(["other"], "threads", 1)]}
               ) as running:
        result = slow.delay()
        wait_until(lambda: gate.entered == 1, "slow started on w1")
        [reply] = hub.control.shutdown(destination=["w1"])
        assert (reply.worker, reply.ok) == ("w1", True)
        assert not running.ended("w1")  # graceful: it waits for its running task
        gate.open()
        assert result.get(timeout=10) == "finished"
        wait_until(lambda: running.ended("w1"), "w1 stopped")
        assert add.apply_async((2, 3), queue="other").get(timeout=10) == 5
        assert [r.worker for r in hub.control.ping()] == ["w2"]


def test_pool_grow_raises_the_running_count(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    gate = Gate()

    @hub.task
    def hold() -> None:
        gate.wait()

    with fleet(hub, {"w1": [(["default"], "threads", 1)]}) as running:
        results = [hold.delay() for _ in range(3)]
        worker = running.workers["w1"]
        wait_until(lambda: gate.entered == 1 and worker.lanes[0].held == 2, "one runs, one waits")
        assert worker.running == 1
        with caplog.at_level(logging.INFO, logger="hubbub.worker"):
            [reply] = hub.control.pool_grow(2)
        assert reply.value == {"lane": "default", "was": 1, "concurrency": 3}
        wait_until(lambda: gate.entered == 3, "three running")
        assert worker.running == 3
        assert len(hub.control.inspect().active()[0].value) == 3
        assert "lane default: pool threads 1 -> 3 (remote control)" in caplog.text
        [shrunk] = hub.control.pool_shrink(1)
        assert shrunk.value["concurrency"] == 2
        gate.open()
        for result in results:
            result.get(timeout=10)


def test_pool_grow_of_a_pool_that_cannot_resize_is_a_clear_error_reply(hub: Hub) -> None:
    with fleet(hub, {"w1": [(["a"], "solo", 1)], "w2": [(["b"], "threads", 1)]}):
        replies = {r.worker: r for r in hub.control.pool_grow(1)}
        assert replies["w1"].error is not None
        assert "solo pool" in replies["w1"].error
        assert "cannot resize" in replies["w1"].error
        assert replies["w2"].ok
        [shrink] = hub.control.pool_shrink(5, destination=["w2"])
        assert shrink.error is not None
        assert "at least 1 remains" in shrink.error


def test_a_command_to_a_gone_worker_times_out_with_a_clear_message(hub: Hub) -> None:
    with fleet(hub, {"w1": [(["a"], "threads", 1)]}):
        with pytest.raises(ControlTimeout) as caught:
            hub.control.ping(destination=["w1", "gone"], timeout=0.5)
        assert "'gone'" in str(caught.value)
        assert "within 0.5s" in str(caught.value)
        assert caught.value.missing == ["gone"]
        assert [r.worker for r in caught.value.replies] == ["w1"]
    with pytest.raises(ControlTimeout, match="no worker answered ping"):
        hub.control.ping(timeout=0.3)


def test_bad_commands_get_error_replies_and_the_worker_keeps_serving(hub: Hub) -> None:
    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    with fleet(hub, {"w1": [(["default"], "threads", 1), (["b"], "threads", 1)]}):
        cases = [("nonsense", {}, "unknown command 'nonsense'"),
                 ("pool_grow", {"n": "two"}, "n must be a whole number"),
                 ("pool_grow", {"n": 1}, "this worker has 2 lanes"),
                 ("pool_grow", {"n": 1, "queue": "zzz"}, "no lane of this worker serves"),
                 ("autoscale", {"max": 1, "min": 4, "queue": "b"}, "MIN <= MAX"),
                 ("revoke", {"ids": "x"}, "non-empty list of task ids"),
                 ("loglevel", {"level": "loud"}, "level must be one of"),
                 ("cancel_queue", {"queue": "nope"}, "does not consume 'nope'"),
                 ("add_queue", {"queue": "b"}, "consumes 'b' already"),
                 ("add_queue", {"queue": "x\x1b[2J"}, "is not usable"),
                 ("add_queue", {"queue": "q" * 300, "lane": "b"}, "is not usable")]
        for command, arguments, expected in cases:
            [reply] = hub.control.call(command, arguments)
            assert expected in (reply.error or ""), (command, reply)
        assert add.delay(2, 2).get(timeout=10) == 4


def test_queues_can_be_added_and_cancelled(hub: Hub) -> None:
    @hub.task
    def add(x: int, y: int) -> int:
        return x + y

    with fleet(hub, {"w1": [(["default"], "threads", 1)]}) as running:
        [added] = hub.control.add_queue("extra")
        assert added.value == {"queue": "extra", "lane": "default,extra"}
        assert add.apply_async((1, 1), queue="extra").get(timeout=10) == 2
        [cancelled] = hub.control.cancel_queue("default")
        assert cancelled.value["queues"] == ["extra"]
        assert running.workers["w1"].queues == ["extra"]
        assert add.apply_async((3, 3), queue="extra").get(timeout=10) == 6


def test_autoscale_and_loglevel_change_the_running_worker(hub: Hub) -> None:
    root = logging.getLogger()
    level = root.level
    try:
        with fleet(hub, {"w1": [(["default"], "threads", 1)]}) as running:
            [reply] = hub.control.autoscale(6, 2)
            assert reply.value == {"lane": "default", "was": None, "autoscale": [2, 6],
                                   "concurrency": 2}
            lane = running.workers["w1"].lanes[0]
            assert (lane.autoscale, lane.pool.concurrency) == ((2, 6), 2)
            [logged] = hub.control.loglevel("debug")
            assert logged.value["level"] == "debug"
            assert root.level == logging.DEBUG
    finally:
        root.setLevel(level)


def test_revoke_through_a_worker_skips_a_waiting_task(hub: Hub) -> None:
    gate = Gate()

    @hub.task
    def hold() -> str:
        gate.wait()
        return "ran"

    with fleet(hub, {"w1": [(["default"], "threads", 1)]}):
        first, second = hold.delay(), hold.delay()
        wait_until(lambda: gate.entered == 1, "first started")
        [reply] = hub.control.revoke([second.id])
        assert reply.value == {"revoked": [second.id], "terminate": False}
        wait_until(lambda: hub.control.inspect().reserved()[0].value == [], "second dropped")
        gate.open()
        assert first.get(timeout=10) == "ran"
        assert gate.entered == 1


def test_revoke_with_terminate_through_a_worker_stops_a_running_task(hub: Hub) -> None:
    gate = Gate()

    @hub.task
    def spin() -> str:
        gate.wait(bound=0)  # counts the start
        while not gate.event.wait(0.01):  # Python steps between waits: a terminate lands
            pass
        return "ran to the end"

    with fleet(hub, {"w1": [(["default"], "threads", 1)]}):
        result = spin.delay()
        wait_until(lambda: gate.entered == 1, "spin started")
        [reply] = hub.control.revoke([result.id], terminate=True)
        assert reply.value == {"revoked": [result.id], "terminate": True}
        with pytest.raises(TaskRevoked):
            result.get(timeout=10)
        wait_until(lambda: hub.control.inspect().active()[0].value == [], "nothing runs")
        gate.open()


class SlowResizePool(ThreadPool):
    """Threads whose resize takes until the test lets it finish (as prefork's may)."""

    def __init__(self, concurrency: int, gate: Gate) -> None:
        super().__init__(concurrency)
        self.gate = gate

    async def resize(self, concurrency: int) -> None:
        while not self.gate.event.is_set():
            await asyncio.sleep(0.01)
        await super().resize(concurrency)


def test_a_slow_resize_is_answered_as_under_way_and_finishes_beside_the_worker(
    hub: Hub,
) -> None:
    gate = Gate()
    lane = Lane(["default"], SlowResizePool(1, gate))
    with fleet(hub, {"w1": [lane]}):
        [reply] = hub.control.pool_grow(3, timeout=5)
        assert reply.value == {"lane": "default", "was": 1, "concurrency": 4,
                               "under_way": True}
        assert lane.pool.concurrency == 1
        assert hub.control.ping()[0].value == "pong"  # the worker answers meanwhile
        gate.open()
        wait_until(lambda: lane.pool.concurrency == 4, "resized")
