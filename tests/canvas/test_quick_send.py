"""A canvas send's quick path (``Producer.publish_parts``): its messages are encoded from
their parts, with no Envelope built, and the bytes that reach the broker are what encoding
each step's envelope (built as ``build_envelope`` builds one) writes. Runs on an SQLite file
(a broker with a sync publisher that needs no server)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubbub import Hub, Task, chord, group
from hubbub.canvas.freeze import freeze
from hubbub.canvas.send import NO_PARENT, Launcher
from hubbub.codecs import get_codec
from hubbub.context import TaskContext, enter, leave
from hubbub.message import Envelope, decode, encode, encode_fields, envelope_of_parts, peek_id
from hubbub.middleware import Middleware, PublishNext
from hubbub.task import SendOptions, build_envelope


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    url = f"sqlite:///{tmp_path / 'quick.db'}"
    h = Hub(url, results=url)
    try:
        yield h
    finally:
        h.close()


def raw_sent(hub: Hub, *queues: str) -> dict[str, bytes]:
    """The bodies waiting in ``queues``, by task id."""
    client = hub.bridge.run(hub.client())
    got = hub.bridge.run(client.transport.fetch(list(queues), limit=1000, lease=30.0,
                                                wait=0.0))
    return {str(peek_id(d.body)): d.body for d in got}


def expected(hub: Hub, task: Task[Any, Any], args: tuple[Any, ...], id: str,
             received: bytes, **changes: Any) -> bytes:
    """What the envelope path writes for this step: ``build_envelope``'s envelope, with the
    times the send chose (they are each send's own) taken from what was received."""
    got = decode(received)
    envelope = build_envelope(task.spec, hub.settings.default_queue, args, {},
                              SendOptions(task_id=id))
    envelope = dataclasses.replace(envelope, created_at=got.created_at, **changes)
    return encode(envelope, hub.codec)


def tasks(hub: Hub) -> tuple[Task[[int, int], int], Task[[list[int]], int]]:
    @hub.task(name="quick.add", queue="fast", priority=6, retries=2, timeout=7.5)
    def add(x: int, y: int) -> int:
        return x + y

    @hub.task(name="quick.total")
    def total(values: list[int]) -> int:
        return sum(values)

    return add, total


def test_a_group_sends_the_bytes_its_members_envelopes_would(hub: Hub) -> None:
    add, _ = tasks(hub)
    result = group(add.s(i, i) for i in range(5)).delay()

    sent = raw_sent(hub, "fast")
    assert list(sent) == [r.id for r in result]  # in order, one message each
    for i, member in enumerate(result):
        assert sent[member.id] == expected(hub, add, (i, i), member.id, sent[member.id])


def test_a_member_with_options_and_what_follows_it_keeps_its_bytes(hub: Hub) -> None:
    add, _ = tasks(hub)
    then = add.s(3).set(task_id="second")
    result = group(add.s(1, 2).set(task_id="first", priority=2) | then,
                   add.s(4, 4).set(queue="slow", task_id="third")).delay()
    assert [r.id for r in result] == ["second", "third"]

    sent = {**raw_sent(hub, "fast"), **raw_sent(hub, "slow")}
    assert set(sent) == {"first", "third"}
    step = {"k": "task", "task": "quick.add", "id": "second", "args": [3], "kwargs": {},
            "opts": {}, "im": False, "next": [], "link": [], "err": []}
    assert sent["first"] == expected(hub, add, (1, 2), "first", sent["first"], priority=2,
                                     canvas={"next": [step]})
    assert sent["third"] == expected(hub, add, (4, 4), "third", sent["third"], queue="slow")


def test_a_chord_header_carries_its_join_as_the_envelope_path_does(hub: Hub) -> None:
    add, total = tasks(hub)
    body = chord([add.s(1, 1).set(task_id="a"), add.s(2, 2).set(task_id="b")],
                 total.s().set(task_id="body")).delay()
    assert body.id == "body"

    sent = raw_sent(hub, "fast")
    for index, (id, args) in enumerate([("a", (1, 1)), ("b", (2, 2))]):
        member = decode(sent[id]).canvas
        assert member is not None
        assert member["chord"]["i"] == index
        assert sent[id] == expected(hub, add, args, id, sent[id], canvas=member)


def test_parts_encode_as_the_envelope_made_of_them_including_times(hub: Hub) -> None:
    add, _ = tasks(hub)
    node = freeze(group(add.s(1, 1).set(countdown=30, expires=60), add.s(2, 2)), fed=False)
    groups: list[tuple[str, list[str]]] = []

    parts = Launcher(hub.tasks, "default").parts(node, NO_PARENT, groups)

    assert groups == [(node["id"], [m["id"] for m in node["members"]])]
    timed, plain = (envelope_of_parts(p) for p in parts)
    assert timed.eta is not None
    assert timed.expires is not None
    assert timed.eta - timed.created_at == pytest.approx(30, abs=1)
    assert timed.expires - timed.created_at == pytest.approx(60, abs=1)
    assert (plain.eta, plain.expires) == (None, None)
    for fields, args, kwargs, canvas in parts:
        envelope = envelope_of_parts((dict(fields), args, kwargs, canvas))
        assert encode_fields(fields, tuple(args), kwargs, get_codec("json"), canvas=canvas) == (
            encode(envelope, get_codec("json")))


class Stamp(Middleware):
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def around_publish(self, envelope: Envelope, call_next: PublishNext) -> None:
        self.seen.append(envelope.id)
        await call_next(envelope)


def test_publish_middleware_still_sees_every_member_of_a_group(hub: Hub) -> None:
    add, _ = tasks(hub)
    stamp = Stamp()
    hub.middleware.append(stamp)

    result = group(add.s(i, i) for i in range(3)).delay()

    assert stamp.seen == [r.id for r in result]
    sent = raw_sent(hub, "fast")
    for i, member in enumerate(result):
        assert sent[member.id] == expected(hub, add, (i, i), member.id, sent[member.id])


@pytest.mark.parametrize("root", ["root-1", None])
def test_a_group_sent_from_a_running_task_is_its_child(hub: Hub, root: str | None) -> None:
    add, _ = tasks(hub)
    token = enter(TaskContext(id="running", task="t", retries=0, max_retries=0,
                              queue="default", root_id=root))
    try:
        result = group(add.s(i, i) for i in range(2)).delay()
    finally:
        leave(token)

    sent = raw_sent(hub, "fast")
    for i, member in enumerate(result):
        got = decode(sent[member.id])
        assert (got.parent_id, got.root_id) == ("running", root or "running")
        assert sent[member.id] == expected(hub, add, (i, i), member.id, sent[member.id],
                                           parent_id="running", root_id=root or "running")
