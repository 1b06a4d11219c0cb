"""Commands and replies on the wire: they round-trip, foreign data never raises, and a worker
with signing keys refuses (logs once, ignores) unsigned and tampered commands, on every
broker."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from hubbub import Hub
from hubbub.control.commands import (
    COMMANDS,
    CONTROL,
    Command,
    ControlTimeout,
    Refused,
    Reply,
    decode_command,
    decode_reply,
    encode_command,
    encode_reply,
)
from hubbub.control.responder import HANDLERS
from hubbub.signing import Signer
from tests.conftest import Broker, make_hub
from tests.control.fleet import fleet
from tests.worker.scratch import wait_until

SECRET = "a-long-enough-shared-secret-42"


def test_commands_and_replies_round_trip_signed_and_unsigned() -> None:
    command = Command("pool_grow", {"n": 2}, ("w1", "w2"), "me:1")
    reply: Reply[object] = Reply("w1", {"concurrency": 3}, None, command.id)
    for signer in (None, Signer({"k1": SECRET})):
        assert decode_command(encode_command(command, signer), signer) == command
        assert decode_reply(encode_reply(reply, signer), signer) == reply
    broadcast = Command("ping")
    assert decode_command(encode_command(broadcast, None), None) == broadcast
    assert broadcast.addressed_to("anyone")
    assert not command.addressed_to("w3")


def test_every_command_the_client_knows_has_a_handler() -> None:
    assert set(COMMANDS) == set(HANDLERS)


@pytest.mark.parametrize("data", [
    b"", b"\xff\xfe", b"null", b"[]", b'"x"', b"{}", b'{"kind": "other"}',
    b'{"kind": "hubbub-control", "v": 2, "type": "command", "id": "1", "command": "ping"}',
    b'{"kind": "hubbub-control", "v": 1, "type": "command", "command": "ping"}',
    b'{"kind": "hubbub-control", "v": 1, "type": "command", "id": "1", "command": 3}',
    b'{"kind": "hubbub-control", "v": 1, "type": "command", "id": "1", "command": "ping",'
    b' "arguments": [], "destination": null}',
    b'{"kind": "hubbub-control", "v": 1, "type": "command", "id": "1", "command": "ping",'
    b' "arguments": {}, "destination": "w1"}',
    b'{"kind": "hubbub-control", "v": 1, "type": "reply", "id": "1", "worker": "w", "error": 5}',
    b"[" * 100_000, b"x" * (2 * 1024 * 1024), b"hubbub-sig1 k1 00\n{}",
])
def test_foreign_data_is_refused_with_a_reason_and_never_raises(data: bytes) -> None:
    for signer in (None, Signer({"k1": SECRET})):
        refused = decode_command(data, signer)
        assert isinstance(refused, Refused)
        assert refused.reason
        assert isinstance(decode_reply(data, signer), Refused)


def test_a_tampered_or_unsigned_command_is_refused_by_a_signer() -> None:
    signer = Signer({"k1": SECRET})
    signed = encode_command(Command("shutdown", destination=("w1",)), signer)
    tampered = signed.replace(b'"w1"', b'"w2"')
    refused = decode_command(tampered, signer)
    assert isinstance(refused, Refused)
    assert "bad signature" in refused.reason
    unsigned = decode_command(encode_command(Command("shutdown"), None), signer)
    assert isinstance(unsigned, Refused)
    assert "unsigned" in unsigned.reason
    other = decode_command(encode_command(Command("ping"), Signer({"k2": SECRET[::-1]})),
                           signer)
    assert isinstance(other, Refused)
    assert "unknown key id" in other.reason


def test_a_signing_worker_ignores_unsigned_commands_and_logs_once(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    signing = make_hub(broker, tmp_path, signing_keys={"k1": SECRET})
    unsigned = make_hub(broker, tmp_path)
    signing.control.timeout = 10  # the wait ends when every worker answered
    try:
        with caplog.at_level(logging.WARNING, logger="hubbub.control"), \
                fleet(signing, {"w1": [(["default"], "threads", 1)]}) as running:
            for _ in range(2):
                with pytest.raises(ControlTimeout):
                    unsigned.control.shutdown(destination=["w1"], timeout=0.3)
            # A tampered one: signed, then its destination changed on the way.
            body = encode_command(Command("shutdown", destination=("w0",)), signing.signer)
            asyncio.run(publish(signing, body.replace(b'"w0"', b'"w1"')))
            wait_until(lambda: "bad signature" in caplog.text, "tampered command refused")
            assert not running.ended("w1")
            assert [r.worker for r in signing.control.ping()] == ["w1"]
        refusals = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
        assert len([m for m in refusals if "unsigned" in m]) == 1  # logged once
        assert len([m for m in refusals if "bad signature" in m]) == 1
    finally:
        signing.close()
        unsigned.close()


async def publish(hub: Hub, body: bytes) -> None:
    async with hub.open_plane() as plane:
        await plane.publish(CONTROL, [body])


def test_replies_hold_any_value_as_json() -> None:
    reply: Reply[object] = Reply("w1", {"when": object()}, None, "1")
    decoded = decode_reply(encode_reply(reply, None), None)
    assert isinstance(decoded, Reply)
    assert json.dumps(decoded.value).startswith('{"when": "<object object')
