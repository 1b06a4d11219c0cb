"""Names on the transport seam: the deprecated ``dead_letters`` still answers, with a warning."""

from __future__ import annotations

import pytest

from hubbub.transports import DeadLetterRequest, Outgoing, open_transport


async def test_dead_letters_warns_and_returns_what_list_dead_returns() -> None:
    async with open_transport("memory://test-transport-names") as t:
        await t.publish([Outgoing("q", b"poison", "m1")])
        [d] = await t.fetch(["q"], limit=1, lease=30, wait=0)
        await t.dead_letter([DeadLetterRequest(d, "unknown task")])
        with pytest.warns(DeprecationWarning, match="dead_letters is now list_dead"):
            old = await t.dead_letters("q", limit=5)
        assert old == await t.list_dead("q", limit=5)
        assert [(x.id, x.reason) for x in old] == [("m1", "unknown task")]
