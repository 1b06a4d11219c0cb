"""Fleet-wide limits with real worker processes, judged by the ledger the tasks write.

The rate test's bounds are behavioural, not performance: 300 tasks at ``50/s`` cannot finish
sooner than 299 intervals of 20.5 ms allow, and should not take much longer. Start times are
written by the task itself, a moment after the gate admitted it (the dispatch to the pool),
so they carry that moment's jitter; see ``JITTER`` below.
"""

from __future__ import annotations

import bisect
import time

import pytest

from tests.faults.ledger import Entry, wait_until
from tests.limits.conftest import Place, place_params

N = 300
RATE = 50  # limitapp's rate_limit="50/s"
# Seconds a task's own start time may lag its admission by the gate. Measured on the 2-core
# machine these tests run on, shared by several test runs (load average 9 to 12): the
# worker's loop wakes for a reserved start 7 ms late at the median and up to ~0.1 s late,
# and the pool's hand-over to a thread adds up to ~0.05 s (more while the load is high).
# Starts admitted 20.5 ms apart can then land side by side: a window of one second may show
# up to JITTER / interval more starts than the gate admitted in it, and a window shorter by
# JITTER no more than it admitted. The admission itself is exact: see test_rate.py and
# test_store.py, which check it without that lag.
JITTER = 0.25


def most_in_window(starts: list[float], width: float) -> int:
    """The most starts in any half-open window [s, s + width) of ``width`` seconds."""
    starts = sorted(starts)
    return max(bisect.bisect_left(starts, s + width) - i for i, s in enumerate(starts))


def most_at_once(entries: list[Entry]) -> int:
    """The most tasks running at once, from their start and done lines."""
    moments = sorted((e.mono, 1 if e.event == "start" else -1) for e in entries
                     if e.event in ("start", "done"))
    running = peak = 0
    for _, step in moments:  # at a tie a done (-1) sorts first: it ended before the start
        running += step
        peak = max(peak, running)
    return peak


# Not on RabbitMQ: there the worker's loop also parses every AMQP frame, and on this loaded
# machine its starts lagged their admission by up to ~0.25 s (the span still held: 6.0 s).
@pytest.mark.parametrize("place", place_params("sqlite", "redis"), indirect=True)
def test_a_rate_holds_for_the_fleet_of_two_workers(place: Place) -> None:
    for _ in range(2):
        place.start_worker("--pool", "threads", "-c", "8")
    keys = [f"k{i}" for i in range(N)]
    place.hub.tasks["limits.paced"].delay_many([(k,) for k in keys])
    place.ledger.submitted(keys)
    wait_until(lambda: place.ledger.count("done") >= N, 60, "every paced task done")
    place.finish()

    report = place.ledger.check()
    assert report.lost == set()
    assert report.duplicated == {}
    starts = [e.mono for e in report.of("start")]
    assert len({e.pid for e in report.of("start")}) == 2, "both workers ran some"
    span = max(e.mono for e in report.of("done")) - min(starts)
    # 299 intervals of 20.5 ms (1.025 s / 50: see LAG_ALLOWANCE): 6.13 s. The bound
    # is 6 s +- 10%.
    assert 5.4 <= span <= 6.6, f"300 tasks at 50/s took {span:.2f}s"
    assert most_in_window(starts, 1.0 - JITTER) <= RATE
    # 100 with a limit per worker; 100 in the first second with a bucket that bursts.
    assert most_in_window(starts, 1.0) <= RATE + JITTER * RATE


@pytest.mark.parametrize("place", place_params(), indirect=True)
def test_concurrency_two_across_two_workers_never_runs_three_at_once(place: Place) -> None:
    for _ in range(2):
        place.start_worker("--pool", "threads", "-c", "4")
    keys = [f"k{i}" for i in range(16)]
    place.hub.tasks["limits.pair"].delay_many([(k, 0.2) for k in keys])
    place.ledger.submitted(keys)
    wait_until(lambda: place.ledger.count("done") >= len(keys), 60, "every pair task done")
    place.finish()

    report = place.ledger.check()
    assert report.lost == set()
    assert report.duplicated == {}
    assert most_at_once(report.entries) == 2  # never more; and two did run side by side


@pytest.mark.parametrize("place", place_params("sqlite", "redis"), indirect=True)
def test_a_per_customer_limit_lets_customers_run_side_by_side(place: Place) -> None:
    place.start_worker("--pool", "threads", "-c", "6")
    calls = [(f"{c}{i}", c, 0.2) for c in ("a", "b", "c") for i in range(4)]
    place.hub.tasks["limits.per_customer"].delay_many(calls)
    place.ledger.submitted([key for key, _, _ in calls])
    wait_until(lambda: place.ledger.count("done") >= len(calls), 60, "every task done")
    place.finish()

    report = place.ledger.check()
    assert report.lost == set()
    for customer in "abc":
        mine = [e for e in report.entries if e.key.startswith(customer)]
        assert most_at_once(mine) == 1, f"customer {customer} ran two at once"
    assert most_at_once(report.entries) >= 2, "different customers never overlapped"


@pytest.mark.parametrize("place", place_params(), indirect=True)
def test_a_slot_held_by_a_worker_killed_9_comes_back_and_the_rest_finish(
        place: Place) -> None:
    task = place.hub.tasks["limits.one_at_a_time"]  # concurrency=1; a key's first run sleeps
    doomed = place.start_worker("--pool", "threads", "-c", "2")
    task.delay("hog", 600.0)
    place.ledger.submitted(["hog"])
    wait_until(lambda: place.ledger.count("start", "hog") == 1, 30, "the hog started")
    survivor = place.start_worker("--pool", "threads", "-c", "2")
    keys = [f"k{i}" for i in range(5)]
    task.delay_many([(k, 0.0) for k in keys])  # first runs, but no sleep asked
    place.ledger.submitted(keys)
    # While the hog holds the only slot, nothing else starts (on either worker).
    time_to_look = time.monotonic() + 1.5
    wait_until(lambda: time.monotonic() > time_to_look, 5, "a look at the queue")
    assert place.ledger.count("start") == 1, "a task started beside the slot's holder"

    killed_at = place.ledger.fault("SIGKILL")
    doomed.kill()
    doomed.wait(10)
    wait_until(lambda: place.ledger.count("done") >= len(keys) + 1, 60,
               "the hog's rerun and every other task done")
    place.finish()

    report = place.ledger.check()
    assert report.lost == set()
    assert report.runs["hog"] == 2  # killed once, run again to the end by the survivor
    assert {e.pid for e in report.of("done")} == {survivor.pid}
    assert most_at_once([e for e in report.entries if e.mono > killed_at]) == 1
    recovery = report.recovery
    assert recovery is not None
    assert recovery < 30, f"the slot came back only after {recovery:.1f}s"


@pytest.mark.parametrize("place", place_params("sqlite", "redis"), indirect=True)
def test_a_slot_is_renewed_while_its_task_runs_past_the_lease(place: Place) -> None:
    task = place.hub.tasks["limits.one_at_a_time"]  # concurrency=1
    for _ in range(2):
        place.start_worker("--pool", "threads", "-c", "2", lease=1.0)
    task.delay("long", 4.0)  # four leases long
    place.ledger.submitted(["long"])
    wait_until(lambda: place.ledger.count("start", "long") == 1, 30, "the long task started")
    keys = [f"k{i}" for i in range(3)]
    task.delay_many([(k, 0.0) for k in keys])
    place.ledger.submitted(keys)
    wait_until(lambda: place.ledger.count("done") >= len(keys) + 1, 60, "every task done")
    place.finish()

    report = place.ledger.check()
    assert report.runs["long"] == 1
    assert most_at_once(report.entries) == 1, "a task took the slot of one still running"
