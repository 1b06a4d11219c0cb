"""What ``hubbub top`` computes: throughput, in/out rates and failures, from events or, without
them, from the registry's counters and the queues' backlog; the registry's running tasks."""

from __future__ import annotations

from hubbub.control.monitor import BUCKET, HISTORY, Monitor
from hubbub.control.registry import MAX_TASKS, LaneEntry, RunningTask, WorkerInfo
from hubbub.control.wire import WireEvent
from hubbub.transports.base import QueueStats

NOW = 1_000_000.0  # a multiple of BUCKET: buckets start at NOW


def worker(name: str, processed: int, queues: tuple[str, ...] = ("default",)) -> WorkerInfo:
    return WorkerInfo(name, "h", 1, "0", (LaneEntry(queues, "threads", 2),), NOW - 100,
                      NOW, processed)


def event(kind: str, at: float, queue: str = "", **data: object) -> WireEvent:
    return WireEvent(kind, at, worker="w", id="i", task="t", queue=queue,
                     data={"type": kind, **data})


def test_throughput_and_rates_come_from_events() -> None:
    monitor = Monitor(queues=("default",))
    monitor.snapshot(NOW, [worker("w", 0)], [QueueStats("default", ready=5)])
    for i in range(30):  # 30 tasks in the bucket before NOW + 10, 3 a second
        at = NOW + i / 3
        monitor.event(event("task-sent", at, "default"))
        monitor.event(event("task-started", at, "default"))
        monitor.event(event("task-succeeded" if i % 10 else "task-failed", at,
                            error="RuntimeError: x"))
    now = NOW + BUCKET + 1
    assert monitor.throughput(now)[-2:] == [30, 0]
    assert monitor.rate(now, 10) == 3.0
    [row] = monitor.queue_rows(NOW + 10)
    assert (row.name, row.ready, row.rate_in, row.rate_out) == ("default", 5, 3.0, 3.0)
    assert len(monitor.failures) == 3


def test_without_events_throughput_comes_from_the_workers_counters() -> None:
    monitor = Monitor()
    monitor.snapshot(NOW, [worker("a", 10), worker("b", 5)], [])
    monitor.snapshot(NOW + 1, [worker("a", 40), worker("b", 5), worker("new", 99)], [])
    assert monitor.throughput(NOW + 1)[-1] == 30  # a newcomer's past is not counted
    [row] = monitor.queue_rows(NOW + 1)
    assert (row.rate_in, row.rate_out) == (None, None)  # unknown without events


def test_without_task_sent_the_in_rate_is_out_plus_the_backlogs_growth() -> None:
    monitor = Monitor(queues=("q",))
    monitor.snapshot(NOW, [], [QueueStats("q", ready=0)])
    for i in range(20):
        monitor.event(event("task-started", NOW + i / 2, "q"))
    monitor.snapshot(NOW + 10, [], [QueueStats("q", ready=50)])
    [row] = monitor.queue_rows(NOW + 10)
    assert row.rate_out == 2.0
    assert row.rate_in == 2.0 + 5.0


def test_old_throughput_ages_out() -> None:
    monitor = Monitor()
    monitor.event(event("task-succeeded", NOW))
    assert sum(monitor.throughput(NOW + HISTORY + BUCKET)) == 0
    assert len(monitor.throughput(NOW)) == int(HISTORY // BUCKET)


def test_queues_listed_are_the_given_ones_those_served_and_those_read() -> None:
    monitor = Monitor(queues=("a",))
    monitor.snapshot(NOW, [worker("w", 0, ("b", "c"))], [QueueStats("d")])
    assert monitor.queue_names() == ["a", "b", "c", "d"]


def test_a_registry_entry_lists_running_tasks_and_reads_bad_ones_as_damaged() -> None:
    tasks = tuple(RunningTask(f"id{i}", "t", NOW + i) for i in range(3))
    info = WorkerInfo.here("w", [], started_at=NOW, processed=1, failed=0, running=3,
                           tasks=tasks)
    assert WorkerInfo.from_json("w", info.to_json()).tasks == tasks
    many = WorkerInfo.here("w", [], started_at=NOW, processed=0, failed=0, running=50,
                           tasks=[RunningTask(str(i), "t", NOW) for i in range(50)])
    assert len(many.tasks) == MAX_TASKS
    old = info.to_json()
    del old["tasks"]  # a worker from before the field
    assert not WorkerInfo.from_json("w", old).damaged
    bad = {**info.to_json(), "tasks": [["x", 1, "y"], "z"]}
    read = WorkerInfo.from_json("w", bad)
    assert read.damaged
    assert read.tasks == ()
