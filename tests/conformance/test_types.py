"""Arguments and return values beyond plain JSON, through a worker, on every broker."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pytest

from hubbub import State
from hubbub.codecs import json_dumps, json_loads, unregister_type
from hubbub.message import Envelope, encode
from hubbub.testing import drain_async
from hubbub.transports import Outgoing
from tests.conftest import Broker, dead_reasons, make_hub, records
from tests.unit.test_types import SAMPLES, Money, same

SERIALIZERS = {
    "json": {},
    "msgpack": {"serializer": "msgpack"},
    "pickle": {"serializer": "pickle", "signing_keys": {"k1": "conformance-secret"}},
}




@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_a_task_receives_each_type_and_its_result_comes_back_as_that_type(
    broker: Broker, tmp_path: Path, serializer: str
) -> None:
    hub = make_hub(broker, tmp_path, **SERIALIZERS[serializer])
    hub.register_type(Money, name="tests.Money", encode=lambda m: [m.amount, m.currency],
                      decode=lambda v: Money(*v))
    samples = {**SAMPLES, "registered": Money(decimal.Decimal("9.99"), "EUR")}
    seen: dict[str, Any] = {}

    @hub.task
    def echo(name: str, value: Any, *, again: Any) -> Any:
        seen[name] = (value, again)
        return (value, [value])

    try:
        sent = {name: echo.delay(name, value, again=(value,)) for name, value in samples.items()}
        await drain_async(hub, timeout=60)
        found = await records(hub, [r.id for r in sent.values()])
        for name, value in samples.items():
            assert same(seen[name], (value, (value,))), name
            record = found[sent[name].id]
            assert record.state == State.SUCCESS, (name, record.error)
            assert same(record.value, (value, [value])), name
    finally:
        hub.close()
        unregister_type("tests.Money")


async def test_a_message_with_an_unknown_type_tag_is_dead_lettered_with_the_reason(
    broker: Broker, tmp_path: Path
) -> None:
    hub = make_hub(broker, tmp_path)
    ran: list[Any] = []

    @hub.task(name="shop.charge")
    def charge(*args: Any) -> None:
        ran.append(args)

    body = json_loads(encode(Envelope("shop.charge", (1,), id="tagged"), hub.codec))
    body["args"] = [{"__hubbub__": "shop.Unregistered", "v": [1, "EUR"]}]

    async def send() -> None:
        client = await hub.client()
        await client.transport.publish([Outgoing("default", json_dumps(body), "tagged")])

    try:
        await hub.bridge.run_async(send())
        await drain_async(hub, timeout=60)
        assert ran == []
        reason = (await dead_reasons(hub))["tagged"]
        assert "unknown type tag 'shop.Unregistered'" in reason
        record = (await records(hub, ["tagged"]))["tagged"]
        assert record.state == State.FAILURE
        assert record.error is not None
        assert "unknown type tag 'shop.Unregistered'" in record.error.message
    finally:
        hub.close()


async def test_a_return_value_that_cannot_be_encoded_fails_the_task_naming_it(
    broker: Broker, tmp_path: Path
) -> None:
    hub = make_hub(broker, tmp_path)

    class Foo:
        pass

    @hub.task
    def report() -> Any:
        return [1, dt.date(2024, 1, 1), {"when": Foo()}]

    try:
        result = report.delay()
        await drain_async(hub, timeout=60)
        record = (await records(hub, [result.id]))[result.id]
        assert record.state == State.FAILURE
        assert record.error is not None
        assert record.error.type == "ResultNotEncodable"
        assert record.error.message == ("return value cannot be stored as JSON: "
                                        "result[2]['when']: cannot encode object of type Foo")
    finally:
        hub.close()
