"""Celery's protocol v2, read and built: pure logic checked against what real Celery writes."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from hubbub.compat.celery.protocol import (
    CeleryRefused,
    build,
    canvas_of,
    due_at,
    priority_key,
    read_amqp,
    read_redis,
    recognise,
    redis_payload,
    to_envelope,
)
from hubbub.message import Envelope


def _celery_payload(**options: Any) -> bytes:
    """The bytes kombu would push on Redis for a Celery send_task, built by Celery itself."""
    from celery import Celery

    app = Celery("unit", set_as_current=False)
    args = options.pop("args", (2, 3))
    kwargs = options.pop("kwargs", {})
    task_id = str(uuid.uuid4())
    message = app.amqp.as_task_v2(task_id, "shop.add", args, kwargs, **options)
    body = json.dumps(message.body, default=_kombu).encode()
    return json.dumps({
        "body": base64.b64encode(body).decode(), "content-encoding": "utf-8",
        "content-type": "application/json", "headers": message.headers,
        "properties": {**message.properties, "body_encoding": "base64",
                       "delivery_tag": str(uuid.uuid4())},
    }).encode()


def _kombu(value: Any) -> Any:
    from kombu.utils.json import JSONEncoder

    return JSONEncoder().default(value)


def test_a_celery_message_reads_into_an_envelope() -> None:
    payload = _celery_payload(args=(2, 3), kwargs={"z": 1}, countdown=30, expires=60,
                              time_limit=10, soft_time_limit=5, group_id="g1")
    message = read_redis(payload)
    env = to_envelope(message, "celery", max_retries=3)
    assert (env.task, env.args, env.kwargs) == ("shop.add", (2, 3), {"z": 1})
    assert env.id == message.id == env.root_id
    assert env.queue == "celery"
    assert env.eta is not None
    assert 25 < env.eta - datetime.now(UTC).timestamp() <= 30
    assert env.expires is not None
    assert env.expires > env.eta
    assert (env.timeout, env.soft_timeout) == (10.0, 5.0)
    assert env.group_id == "g1"
    assert env.max_retries == 3
    assert due_at(message) == env.eta


def test_kombu_typed_values_arrive_as_python_values() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    key = uuid.uuid4()
    env = to_envelope(read_redis(_celery_payload(args=(when, Decimal("1.50"), key))), "q")
    assert env.args == (when, Decimal("1.50"), key)


@pytest.mark.parametrize(("content_type", "word"), [
    ("application/x-python-serialize", "pickle"),
    ("application/x-yaml", "yaml"),
    ("text/plain", "application/json only"),
])
def test_what_is_not_json_is_refused_naming_the_task_and_never_decoded(
        content_type: str, word: str) -> None:
    outer = json.loads(_celery_payload())
    outer["content-type"] = content_type
    outer["body"] = base64.b64encode(b"\x80\x04cos\nsystem\n").decode()  # never looked at
    with pytest.raises(CeleryRefused, match=word) as caught:
        read_redis(json.dumps(outer).encode())
    assert caught.value.task == "shop.add"
    assert caught.value.task_id == outer["headers"]["id"]


@pytest.mark.parametrize("payload", [
    b"not json", b"[1, 2]", b'{"body": 1, "headers": {"task": "t", "id": "i"}}',
    b'{"body": "!!", "headers": {"task": "t", "id": "i"}, "properties": '
    b'{"body_encoding": "base64"}}',
    b'{"body": "e30=", "headers": {}, "properties": {"body_encoding": "base64"}}',
])
def test_malformed_redis_items_are_refused_with_a_reason(payload: bytes) -> None:
    with pytest.raises(CeleryRefused):
        read_redis(payload)


def test_protocol_1_is_refused_with_the_setting_that_fixes_it() -> None:
    with pytest.raises(CeleryRefused, match="task_protocol=2"):
        read_amqp(b'{"task": "shop.add", "id": "x", "args": []}', {}, "application/json",
                  "utf-8", {})


def test_a_plain_chain_rides_along_and_its_next_step_gets_the_result() -> None:
    from celery import Celery

    from hubbub.compat.celery.canvas import CHAIN, next_step

    app = Celery("unit", set_as_current=False)
    last = app.signature("shop.mul", (10,), task_id="t3")
    middle = app.signature("shop.add", (5,), immutable=True, task_id="t2", queue="other")
    message = read_redis(_celery_payload(chain=[dict(last), dict(middle)]))
    assert canvas_of(message) == "chain"
    env = to_envelope(message, "celery")
    step = next_step(env, 3)
    assert step is not None
    assert (step.task, step.args, step.id, step.queue) == ("shop.add", (5,), "t2", "other")
    assert (step.parent_id, step.root_id) == (env.id, env.id)
    final = next_step(step, 8)
    assert final is not None
    assert (final.task, final.args, final.id, final.queue) == ("shop.mul", (8, 10), "t3",
                                                               "other")
    assert CHAIN not in final.headers
    assert next_step(final, 80) is None
    # The rest of the chain survives a trip through Celery's format (a retry).
    again = to_envelope(read_redis(redis_payload(build(step), "other")), "other")
    assert again.headers[CHAIN] == step.headers[CHAIN]


def test_a_chain_holding_a_group_is_refused_saying_the_bridge_has_no_such_canvas() -> None:
    from celery import Celery, group

    app = Celery("unit", set_as_current=False)
    inner = group(app.signature("shop.add", (1,)), app.signature("shop.add", (2,)))
    message = read_redis(_celery_payload(chain=[dict(inner)]))
    with pytest.raises(CeleryRefused, match=r"canvas \(a chain with .*does not support"):
        to_envelope(message, "celery")


def test_a_group_member_is_a_plain_task() -> None:
    message = read_redis(_celery_payload(group_id="g", group_index=0))
    assert canvas_of(message) is None
    assert to_envelope(message, "celery").group_id == "g"


def test_a_built_message_is_what_celery_reads() -> None:
    eta = datetime.now(UTC) + timedelta(seconds=30)
    env = Envelope("shop.add", (2, 3), {"z": Decimal("2")}, eta=eta.timestamp(), retries=2,
                   timeout=7.0, parent_id="p")
    built = build(env)
    assert built.headers["task"] == "shop.add"
    assert built.headers["id"] == env.id
    assert built.headers["retries"] == 2
    assert built.headers["timelimit"] == [7.0, None]
    assert datetime.fromisoformat(built.headers["eta"]) == eta
    # kombu's own decoder reads the body back.
    args, kwargs, embed = json.loads(built.body, object_hook=_unkombu)
    assert (args, kwargs) == ([2, 3], {"z": Decimal("2")})
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    # And the bridge reads its own output the same way.
    again = to_envelope(read_redis(redis_payload(built, "celery")), "celery")
    assert (again.id, again.args, again.kwargs, again.retries) == (env.id, (2, 3),
                                                                    {"z": Decimal("2")}, 2)


def _unkombu(value: dict[str, Any]) -> Any:
    from kombu.utils.json import object_hook

    return object_hook(value)


def test_priorities_map_to_kombus_lists() -> None:
    assert priority_key("celery", 0) == "celery"
    assert priority_key("celery", 4) == "celery\x06\x163"
    assert priority_key("celery", 9) == "celery\x06\x169"


def test_recognise_names_a_celery_message_from_amqp_headers_or_a_redis_body() -> None:
    payload = _celery_payload()
    task_id = json.loads(payload)["headers"]["id"]
    assert recognise(payload, None) == ("shop.add", task_id)
    assert recognise(b"[[2, 3], {}, {}]", {"task": "shop.add", "id": "x"}) == ("shop.add", "x")
    assert recognise(b'{"v": 1, "task": "a"}', None) is None


def test_a_message_over_the_size_limit_is_refused_before_it_is_read() -> None:
    payload = _celery_payload(args=("x" * 5000,))
    with pytest.raises(CeleryRefused, match="over the limit of 1000"):
        read_redis(payload, max_size=1000)
    with pytest.raises(CeleryRefused, match="over the limit") as caught:
        read_amqp(b"[" * 5000, {"task": "shop.add", "id": "i1"}, "application/json", "utf-8",
                  {}, max_size=1000)
    assert (caught.value.task, caught.value.task_id) == ("shop.add", "i1")
