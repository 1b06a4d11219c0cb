"""The beat, driven by a FakeClock: slots, missed-slot policies, leader election, repair."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hubbub import ConfigurationError, Hub, Middleware, State, TransportUnavailable
from hubbub.clock import FakeClock
from hubbub.message import Envelope
from hubbub.middleware import PublishNext
from hubbub.results import memory as results_memory
from hubbub.schedule.beat import Beat
from hubbub.schedule.entries import slot_id
from hubbub.schedule.store import open_store
from hubbub.schedule.stores import memory as store_memory
from hubbub.testing import drain_async
from hubbub.transports import memory as transport_memory

T0 = 1_700_000_105.0  # five seconds after a multiple of 10, 60 and 300


class Recorder(Middleware):
    """Records what is published; can fail the next publishes like a broker that is down."""

    def __init__(self) -> None:
        self.sent: list[Envelope] = []
        self.fail = 0

    async def around_publish(self, envelope: Envelope, call_next: PublishNext) -> None:
        if self.fail:
            self.fail -= 1
            raise TransportUnavailable("broker at 127.0.0.1 refused (test)")
        await call_next(envelope)
        self.sent.append(envelope)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.sent]


@dataclass
class Scene:
    hub: Hub
    clock: FakeClock
    recorder: Recorder
    beats: list[Beat] = field(default_factory=list)

    def beat(self, **options: object) -> Beat:
        options.setdefault("lease", 10)
        beat = Beat(self.hub, clock=self.clock, owner=f"b{len(self.beats)}",
                    **options)  # type: ignore[arg-type]
        self.beats.append(beat)
        return beat

    async def drive(self, beats: list[Beat], until: float,
                    on_tick: Callable[[], None] | None = None) -> None:
        """Tick ``beats`` in turn, moving the clock to the earliest wake-up, until ``until``."""
        for _ in range(100_000):
            if self.clock.time() >= until:
                return
            waits = [await b.tick() for b in beats]
            if on_tick is not None:
                on_tick()
            self.clock.advance(min(max(min(waits), 0.001), until - self.clock.time()))
        raise AssertionError("the beats did not get there")


@pytest.fixture
async def scene() -> AsyncIterator[Scene]:
    url = f"memory://beat-{uuid.uuid4().hex[:8]}"
    recorder = Recorder()
    hub = Hub(url, middleware=[recorder])
    s = Scene(hub, FakeClock(T0), recorder)
    try:
        yield s
    finally:
        for beat in s.beats:
            await beat.close()
        hub.close()
        for stores in (store_memory._STATES, transport_memory._STORES, results_memory._STORES):
            stores.pop(url, None)


def slots(entry: str, *instants: float) -> list[str]:
    return [slot_id(entry, i) for i in instants]


# -- slots -----------------------------------------------------------------------------


async def test_a_new_entry_starts_at_its_next_slot_and_each_slot_fires_once(scene: Scene) -> None:
    scene.hub.schedule("job", remote=True, every=10, args=(1,), kwargs={"k": "v"}, queue="beat",
                       priority=3)
    beat = scene.beat()

    wait = await beat.tick()
    assert beat.is_leader
    assert scene.recorder.sent == []
    assert wait == pytest.approx(10 / 3)  # renew the lease before the slot comes

    scene.clock.advance(wait)
    assert await beat.tick() == pytest.approx(5 - 10 / 3 + 0.001)  # wake up at the slot
    scene.clock.advance(5 - 10 / 3 + 0.001)
    await beat.tick()
    await beat.tick()

    [envelope] = scene.recorder.sent
    assert envelope.id == "job@2023-11-14T22:15:10Z"
    assert (envelope.task, envelope.args, envelope.kwargs) == ("job", (1,), {"k": "v"})
    assert (envelope.queue, envelope.priority) == ("beat", 3)
    assert envelope.headers == {"schedule_entry": "job", "schedule_slot": T0 + 5}


async def test_interval_and_cron_entries_fire_at_their_own_slots(scene: Scene) -> None:
    scene.hub.schedule("fast", remote=True, every=60)
    scene.hub.schedule("five", remote=True, cron="*/5 * * * *")

    await scene.drive([scene.beat()], T0 + 600)

    base = T0 - 5
    assert sorted(scene.recorder.ids) == sorted(
        slots("fast", *(base + 60 * i for i in range(1, 11)))
        + slots("five", *(base + 300 * i for i in (1, 2))))


async def test_a_registered_task_lends_its_options_and_expires_counts_from_the_slot(
    scene: Scene,
) -> None:
    @scene.hub.periodic(every=10, queue="reports", priority=7, retries=4)
    def report() -> None: ...

    scene.hub.schedule(report, every=10, expires=2.5, name="report-expiring")
    await scene.drive([scene.beat()], T0 + 6)

    by_entry = {e.headers["schedule_entry"]: e for e in scene.recorder.sent}
    plain, expiring = by_entry[report.name], by_entry["report-expiring"]
    assert (plain.queue, plain.priority, plain.max_retries) == ("reports", 7, 4)
    assert plain.expires is None
    assert expiring.expires == T0 + 5 + 2.5


async def test_an_entry_that_cannot_be_sent_is_logged_and_the_others_still_run(
    scene: Scene, caplog: pytest.LogCaptureFixture,
) -> None:
    scene.hub.schedule("bad", remote=True, every=10, args=(object(),))
    scene.hub.schedule("good", remote=True, every=10)

    with caplog.at_level(logging.ERROR, logger="hubbub.beat"):
        await scene.drive([scene.beat()], T0 + 20)

    assert scene.recorder.ids == slots("good", T0 + 5, T0 + 15)
    assert "schedule entry 'bad' cannot be sent" in caplog.text


# -- missed slots ----------------------------------------------------------------------


async def _outage(scene: Scene, missed: str, hours: float = 1.0) -> Beat:
    scene.hub.schedule("job", remote=True, every=60, missed=missed)  # type: ignore[arg-type]
    first = scene.beat()
    await scene.drive([first], T0 + 60)  # fires T0+55
    scene.clock.advance(hours * 3600)  # no beat runs
    return scene.beat()


async def test_missed_once_runs_once_for_all_missed_slots(
    scene: Scene, caplog: pytest.LogCaptureFixture,
) -> None:
    second = await _outage(scene, "once")
    now = scene.clock.time()  # T0 + 3660: 59 slots are more than `grace` (20 s) late

    with caplog.at_level(logging.WARNING, logger="hubbub.beat"):
        await scene.drive([second], now + 70)

    latest_missed = T0 + 3595  # the last slot more than `grace` (20 s) before `now`
    assert scene.recorder.ids == slots("job", T0 + 55, latest_missed, T0 + 3655, T0 + 3715)
    assert "missed 59 slot(s)" in caplog.text
    assert "running it once" in caplog.text


async def test_missed_skip_skips_to_the_next_slot(
    scene: Scene, caplog: pytest.LogCaptureFixture,
) -> None:
    second = await _outage(scene, "skip")
    now = scene.clock.time()

    with caplog.at_level(logging.WARNING, logger="hubbub.beat"):
        await scene.drive([second], now + 70)

    assert scene.recorder.ids == slots("job", T0 + 55, T0 + 3655, T0 + 3715)
    assert "skipped (missed='skip')" in caplog.text


async def test_slots_late_by_less_than_grace_each_run(scene: Scene) -> None:
    scene.hub.schedule("job", remote=True, every=1, missed="skip")
    beat = scene.beat(grace=5)
    await beat.tick()
    scene.clock.advance(4.5)  # the beat was stalled: four slots are late, none missed

    await beat.tick()

    assert scene.recorder.ids == slots("job", T0 + 1, T0 + 2, T0 + 3, T0 + 4)


async def test_an_expired_scheduled_task_is_not_run(tmp_path: Path) -> None:
    ran: list[int] = []
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}", lease=5)
    try:
        @hub.task
        def job() -> None:
            ran.append(1)

        hub.schedule(job, every=60, expires=30)
        clock = FakeClock(time.time() // 60 * 60 - 30)  # no slot within the grace of 10 s
        store = open_store(hub.settings.results, clock=clock)
        await store.connect()
        an_hour_ago = clock.time() - 3600
        assert await store.acquire("old", 1)
        assert await store.claim_slot(job.name, an_hour_ago, "old")
        await store.mark_published(job.name, an_hour_ago)
        await store.release("old")
        await store.close()
        beat = Beat(hub, lease=5, clock=clock)

        await beat.tick()  # runs the missed slots once; its task expired 30 s after its slot
        await beat.close()
        await drain_async(hub, timeout=20)

        assert beat.sent == 1
        assert ran == []
        sent_id = slot_id(job.name, clock.time() - 30)  # the latest slot before the grace
        record = (await hub.bridge.run_async(hub.read_results([sent_id])))[sent_id]
        assert record.state == State.REVOKED
        assert record.error is not None
        assert "expired before it ran" in record.error.message
    finally:
        hub.close()


# -- leadership ------------------------------------------------------------------------


async def test_of_two_beats_one_leads_and_each_slot_fires_once(scene: Scene) -> None:
    scene.hub.schedule("job", remote=True, every=1)
    a, b = scene.beat(), scene.beat()

    await scene.drive([a, b], T0 + 30)

    assert (a.is_leader, b.is_leader) == (True, False)
    assert scene.recorder.ids == slots("job", *(T0 + i for i in range(1, 30)))


async def test_a_dead_leader_is_replaced_within_a_lease_and_no_slot_is_lost_or_doubled(
    scene: Scene,
) -> None:
    scene.hub.schedule("job", remote=True, every=1)
    a, b = scene.beat(), scene.beat()
    await scene.drive([a, b], T0 + 10.5)
    died_at = scene.clock.time()
    took_over: list[float] = []

    def watch() -> None:
        if b.is_leader and not took_over:
            took_over.append(scene.clock.time())

    await scene.drive([b], T0 + 40, on_tick=watch)  # a no longer ticks: it died

    assert took_over
    assert took_over[0] - died_at <= b.lease * 1.1 + 0.01
    assert scene.recorder.ids == slots("job", *(T0 + i for i in range(1, 40)))


async def test_a_stopping_leader_hands_over_at_once(scene: Scene) -> None:
    scene.hub.schedule("job", remote=True, every=1)
    a, b = scene.beat(), scene.beat()
    await scene.drive([a, b], T0 + 5.5)

    await a.close()
    handed_at = scene.clock.time()
    await scene.drive([b], handed_at + b.poll + 0.01)

    assert b.is_leader
    await scene.drive([b], T0 + 10)
    assert scene.recorder.ids == slots("job", *(T0 + i for i in range(1, 10)))


async def test_a_leader_that_lost_its_lease_unknowingly_cannot_send(scene: Scene) -> None:
    scene.hub.schedule("job", remote=True, every=1)
    a, b = scene.beat(), scene.beat()
    await scene.drive([a], T0 + 3.5)
    store = open_store(scene.hub.settings.results, clock=scene.clock)
    await store.release(a.owner)  # as if a's lease ran out while a was paused
    assert await store.acquire(b.owner, 10)

    scene.clock.advance(1)
    await a.tick()  # a still thinks it leads: the store refuses its claim
    await a.tick()  # and it finds out when it renews

    assert scene.recorder.ids == slots("job", T0 + 1, T0 + 2, T0 + 3)
    assert not a.is_leader
    await scene.drive([a, b], T0 + 8)
    assert scene.recorder.ids == slots("job", *(T0 + i for i in range(1, 8)))


async def test_a_slot_claimed_by_a_leader_that_died_before_sending_is_sent_once(
    scene: Scene, caplog: pytest.LogCaptureFixture,
) -> None:
    scene.hub.schedule("job", remote=True, every=10)
    store = open_store(scene.hub.settings.results, clock=scene.clock)
    assert await store.acquire("ghost", 10)
    assert await store.claim_slot("job", T0 - 5, "ghost")
    await store.mark_published("job", T0 - 5)
    scene.clock.advance(5)
    assert await store.claim_slot("job", T0 + 5, "ghost")  # ...and died here
    beat = scene.beat()

    await scene.drive([beat], T0 + 10.2)  # its lease runs out; the claim is still young
    assert beat.is_leader
    assert scene.recorder.ids == []

    with caplog.at_level(logging.WARNING, logger="hubbub.beat"):
        await scene.drive([beat], T0 + 20)

    assert scene.recorder.ids == slots("job", T0 + 5, T0 + 15)
    assert "not recorded as sent" in caplog.text


async def test_a_failed_publish_is_retried_with_the_same_task_id(
    scene: Scene, caplog: pytest.LogCaptureFixture,
) -> None:
    scene.hub.schedule("job", remote=True, every=10)
    beat = scene.beat()
    await beat.tick()
    scene.clock.advance(5)
    scene.recorder.fail = 2

    with caplog.at_level(logging.WARNING, logger="hubbub.beat"):
        waits = [await beat.tick(), await beat.tick()]
        await beat.tick()

    assert waits == [0.1, 0.2]  # backoff
    assert scene.recorder.ids == slots("job", T0 + 5)
    assert "refused (test)" in caplog.text


# -- running ---------------------------------------------------------------------------


async def test_run_fires_until_stopped_then_releases_the_lease(scene: Scene) -> None:
    scene.hub.schedule("job", remote=True, every=1)
    beat = scene.beat()
    running = asyncio.create_task(beat.run())

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(scene.recorder.sent) < 3:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    beat.stop()
    await asyncio.wait_for(running, 5)

    assert len(set(scene.recorder.ids)) == len(scene.recorder.ids) >= 3
    store = open_store(scene.hub.settings.results, clock=scene.clock)
    assert await store.leader() is None


async def test_stop_before_run_returns_at_once(scene: Scene) -> None:
    beat = scene.beat()
    beat.stop()

    await asyncio.wait_for(beat.run(), 5)

    assert scene.recorder.sent == []


def test_a_beat_needs_a_result_store() -> None:
    hub = Hub("memory://beat-no-results", results="none")
    try:
        with pytest.raises(ConfigurationError, match="pass results="):
            Beat(hub)
        with pytest.raises(ConfigurationError, match="lease must be more than 0"):
            Beat(Hub("memory://beat-lease"), lease=0)
    finally:
        hub.close()


async def test_an_entry_whose_cron_runs_out_stops_and_the_others_go_on(
    scene: Scene, caplog: pytest.LogCaptureFixture,
) -> None:
    # croniter: seconds, then year
    scene.hub.schedule("in-2023", remote=True, cron="0 0 * * * 0 2023")
    scene.hub.schedule("daily", remote=True, every=86400)
    day = 86400

    with caplog.at_level(logging.ERROR, logger="hubbub.beat"):
        await scene.drive([scene.beat(lease=day)], T0 + 60 * day)

    sent = collections.Counter(i.split("@")[0] for i in scene.recorder.ids)
    assert sent == {"in-2023": 47, "daily": 60}  # 15 Nov to 31 Dec 2023; then it stops
    assert "schedule entry 'in-2023' stops" in caplog.text
