"""``delay()``'s quick path (``Producer.send_now``): a plain call is sent without building an
Envelope, and what reaches the broker is what the envelope path would send. Runs on an
SQLite file (the broker with a sync publisher that needs no server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubbub import Hub
from hubbub.message import Envelope, decode
from hubbub.middleware import Middleware, PublishNext


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub(f"sqlite:///{tmp_path / 'quick.db'}", results="none")
    try:
        yield h
    finally:
        h.close()


def sent(hub: Hub, queue: str = "default") -> list[Envelope]:
    client = hub.bridge.run(hub.client())
    got = hub.bridge.run(client.transport.fetch([queue], limit=100, lease=30.0, wait=0.0))
    return [decode(d.body) for d in got]


def test_a_plain_delay_sends_the_envelope_the_task_options_describe(hub: Hub) -> None:
    @hub.task(name="shop.add", queue="fast", priority=6, retries=2, timeout=7.5)
    def add(x: int, y: int = 0) -> int:
        return x + y

    first = add.delay(1)  # connects (the envelope path), then the quick path
    second = add.delay(2, y={"k": [1, 2.5]})
    third = add.apply_async((3,), {"y": 4})

    envelopes = sent(hub, "fast")
    assert [e.id for e in envelopes] == [first.id, second.id, third.id]
    assert [(e.args, e.kwargs) for e in envelopes] == [
        ((1,), {}), ((2,), {"y": {"k": [1, 2.5]}}), ((3,), {"y": 4})]
    for e in envelopes:
        assert (e.task, e.queue, e.priority, e.max_retries, e.timeout, e.eta, e.expires) == (
            "shop.add", "fast", 6, 2, 7.5, None, None)
        assert e.headers == {}
        assert e.parent_id is None
        assert e.retries == 0
    assert second.task == "shop.add"
    assert second.ignored
    assert hub.send_now(add, (5,), {}) is not None  # that path, not the envelope one


def test_options_with_a_time_go_the_envelope_path_and_keep_it(hub: Hub) -> None:
    @hub.task(name="t")
    def t() -> None:
        return None

    t.delay()
    t.options(expires=60).delay()
    t.apply_async(task_id="given-id")

    envelopes = sent(hub)
    assert [e.expires is not None for e in envelopes] == [False, True, False]
    assert envelopes[2].id == "given-id"


class Stamp(Middleware):
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def around_publish(self, envelope: Envelope, call_next: PublishNext) -> None:
        self.seen.append(envelope.id)
        await call_next(envelope)


def test_publish_middleware_still_sees_every_plain_send(hub: Hub) -> None:
    @hub.task(name="t")
    def t(x: Any) -> None:
        return None

    t.delay(0)
    stamp = Stamp()
    hub.middleware.append(stamp)  # added after the first sends: still applies
    ids = [t.delay(i).id for i in range(3)]

    assert stamp.seen == ids
    assert hub.send_now(t, (9,), {}) is None  # needs the event loop: nothing sent
    assert [e.args for e in sent(hub)] == [(0,), (0,), (1,), (2,)]
