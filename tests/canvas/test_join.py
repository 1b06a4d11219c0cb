"""The crash windows of a chord join, driven step by step on the in-process broker and store:
a header task that runs again after the worker that completed the join died sends the body
if (and only if) the body was never marked sent."""

from __future__ import annotations

import uuid

from hubbub import Hub, chord
from hubbub.canvas.freeze import freeze
from hubbub.canvas.send import NO_PARENT, Launcher
from hubbub.message import decode
from hubbub.results.base import ChordMember
from hubbub.worker.followups import FollowUps, write_followups


async def test_a_rerun_header_task_sends_the_body_only_if_it_was_never_sent() -> None:
    url = f"memory://join-{uuid.uuid4().hex}"
    hub = Hub(url, results=url)

    @hub.task(name="join.header")
    def header(x: int) -> int:
        return x

    @hub.task(name="join.body")
    def body(values: list[int]) -> int:
        return sum(values)

    node = freeze(chord([header.s(1), header.s(2)], body.s()), fed=False)
    first, second = Launcher(hub.tasks, "default").launch(node, NO_PARENT).envelopes
    transport, results = hub.open_transport(), hub.open_results()
    assert results is not None
    await transport.connect()
    await results.connect()
    try:
        # Both header tasks joined; the worker of the second died before sending the body.
        await results.chord_join([ChordMember(node["id"], first.id, 0, 1),
                                  ChordMember(node["id"], second.id, 1, 2)], ttl=60)
        followups = FollowUps(hub, 1 << 20)
        again = followups.succeeded(second, 2)
        assert again is not None
        assert await write_followups([again], transport, results, 60) == []
        sent = await transport.fetch(["default"], limit=10, lease=5, wait=0)
        bodies = [decode(d.body) for d in sent]
        assert [(e.task, e.args, e.id) for e in bodies] == [
            ("join.body", ([1, 2],), node["body"]["id"])]
        await transport.ack(sent)
        # Now marked sent: a further rerun of a header task sends nothing.
        rerun = followups.succeeded(first, 1)
        assert rerun is not None
        await write_followups([rerun], transport, results, 60)
        assert await transport.fetch(["default"], limit=10, lease=5, wait=0) == []
    finally:
        await transport.close()
        await results.close()
        hub.close()
