"""The Redis scripts read a queue's keys by position; QueueKeys names them in one place."""

from __future__ import annotations

import re

from hubbub.transports._redis_lua import LEVELS, SCRIPTS, QueueKeys


def test_queue_keys_give_the_scripts_sixteen_keys_in_the_documented_order() -> None:
    keys = QueueKeys.of("hubbub", "emails")
    lua = keys.lua()
    assert len(lua) == LEVELS + 6
    assert lua[:LEVELS] == list(keys.ready)
    # KEYS[11..16] in the table of QueueKeys' docstring (Lua counts from 1)
    assert lua[10:] == [keys.leases, keys.held, keys.delayed, keys.delayed_bodies, keys.wake,
                        keys.dead]
    assert [k.rsplit(":", 1)[-1] for k in lua[10:]] == ["leases", "held", "delayed", "bodies",
                                                        "wake", "dead"]


def test_every_key_of_a_queue_shares_its_hash_tag() -> None:
    assert {k.split("}")[0] + "}" for k in QueueKeys.of("shop", "a:b").lua()} == {"{shop:a:b}"}


def test_the_scripts_read_no_key_past_the_sixteenth() -> None:
    used = {int(n) for text in SCRIPTS.values() for n in re.findall(r"KEYS\[(\d+)\]", text)}
    assert used <= set(range(1, LEVELS + 7))
