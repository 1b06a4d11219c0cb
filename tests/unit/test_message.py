from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
import uuid
from typing import Any

import pytest

from hubbub import Hub
from hubbub.codecs import get_codec, json_dumps, json_loads
from hubbub.errors import MessageError, MessageTooLarge
from hubbub.message import VERSION, Envelope, decode, encode, new_id, peek_id
from hubbub.task import SendOptions

JSON = get_codec("json")


def full_envelope() -> Envelope:
    """An envelope with every optional field set, so a round trip checks them all."""
    return Envelope(
        task="shop.send_receipt",
        args=(1, "two", [3, 4], {"five": None}, 6.5, True),
        kwargs={"to": "ada@example.com", "lines": [{"sku": "A1", "qty": 2}]},
        queue="mail",
        priority=7,
        eta=1_700_000_000.25,
        expires=1_700_000_600.5,
        retries=2,
        max_retries=5,
        timeout=30.0,
        soft_timeout=20.0,
        parent_id="parent",
        root_id="root",
        group_id="group",
        headers={"trace": "abc"},
    )


def valid_body(**changes: Any) -> dict[str, Any]:
    """A decoded valid JSON body, with some keys replaced (or removed when given ``...``)."""
    body: dict[str, Any] = json_loads(encode(Envelope("t", (1,), {"k": "v"}), JSON))
    for key, value in changes.items():
        if value is ...:
            del body[key]
        else:
            body[key] = value
    return body


def body_bytes(**changes: Any) -> bytes:
    return json_dumps(valid_body(**changes))


# -- round trips ---------------------------------------------------------------------------


def test_json_envelope_survives_encode_and_decode_unchanged(json_backend: str) -> None:
    envelope = full_envelope()

    assert decode(encode(envelope, JSON)) == envelope


def test_json_envelope_keeps_arguments_inline_and_readable() -> None:
    body = json_loads(encode(Envelope("t", (1, 2), {"x": 3}), JSON))

    assert body["v"] == VERSION
    assert body["args"] == [1, 2]
    assert body["kwargs"] == {"x": 3}
    assert body["content_type"] == "application/json"
    assert "payload" not in body


def test_msgpack_envelope_survives_encode_and_decode_on_a_hub_that_accepts_it() -> None:
    hub = Hub("memory://test-unit", serializer="msgpack")
    try:
        envelope = full_envelope()

        decoded = decode(encode(envelope, hub.codec), accept=hub.settings.accept)

        assert decoded == dataclasses.replace(envelope, content_type="application/x-msgpack")
    finally:
        hub.close()


def test_msgpack_envelope_carries_bytes_in_a_base64_payload() -> None:
    msgpack = get_codec("msgpack")
    envelope = Envelope("t", (b"\x00\xffraw",), {"blob": b"\x01"})

    data = encode(envelope, msgpack)
    body = json_loads(data)

    assert body["content_type"] == "application/x-msgpack"
    assert "args" not in body
    assert base64.b64decode(body["payload"])
    decoded = decode(data, accept=frozenset({"json", "msgpack"}))
    assert decoded.args == (b"\x00\xffraw",)
    assert decoded.kwargs == {"blob": b"\x01"}


def test_next_attempt_counts_a_retry_and_sets_the_new_eta() -> None:
    envelope = Envelope("t", retries=1, max_retries=3)

    following = envelope.next_attempt(eta=123.0)

    assert (following.retries, following.eta, following.id) == (2, 123.0, envelope.id)


def test_new_envelopes_get_distinct_ids() -> None:
    assert Envelope("t").id != Envelope("t").id


# -- decode rejects what it cannot trust -----------------------------------------------------


def test_decode_rejects_bytes_that_are_not_json(json_backend: str) -> None:
    with pytest.raises(MessageError, match="not JSON"):
        decode(b"\x80\x81 definitely not json")


def test_decode_rejects_json_that_is_not_an_object() -> None:
    with pytest.raises(MessageError, match="not a JSON object"):
        decode(b"[1, 2, 3]")


def test_decode_rejects_a_body_of_another_version() -> None:
    with pytest.raises(MessageError, match="unsupported message version 2"):
        decode(body_bytes(v=2))


def test_decode_rejects_a_body_without_a_version() -> None:
    with pytest.raises(MessageError, match="unsupported message version None"):
        decode(body_bytes(v=...))


def test_decode_rejects_a_boolean_version() -> None:
    with pytest.raises(MessageError, match="version"):
        decode(body_bytes(v=True))


@pytest.mark.parametrize(
    "name",
    ["task", "id", "queue", "priority", "retries", "created_at", "content_type", "headers", "eta"],
)
def test_decode_rejects_a_body_with_a_missing_field(name: str) -> None:
    with pytest.raises(MessageError, match=f"field '{name}' is missing"):
        decode(body_bytes(**{name: ...}))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("priority", "high"),
        ("priority", 1.5),
        ("retries", True),
        ("max_retries", None),
        ("task", 42),
        ("id", None),
        ("eta", "tomorrow"),
        ("headers", ["not", "an", "object"]),
        ("created_at", False),
        ("parent_id", 7),
    ],
)
def test_decode_rejects_a_field_of_the_wrong_type(name: str, value: Any) -> None:
    with pytest.raises(MessageError, match=f"field '{name}' has a wrong type"):
        decode(body_bytes(**{name: value}))


def test_decode_accepts_null_for_optional_fields_and_integers_for_times() -> None:
    envelope = decode(body_bytes(eta=None, expires=1_700_000_000, timeout=5, parent_id=None))

    assert envelope.eta is None
    assert envelope.expires == 1_700_000_000
    assert envelope.timeout == 5


@pytest.mark.parametrize("args", ["1, 2", {"a": 1}, None, 3])
def test_decode_rejects_args_that_are_not_a_list(args: Any) -> None:
    with pytest.raises(MessageError, match="'args' must be a list"):
        decode(body_bytes(args=args))


def test_decode_rejects_a_json_body_without_args() -> None:
    with pytest.raises(MessageError, match="'args' must be a list"):
        decode(body_bytes(args=...))


def test_decode_rejects_kwargs_that_are_not_an_object() -> None:
    with pytest.raises(MessageError, match="'kwargs' must be an object"):
        decode(body_bytes(kwargs=[["k", "v"]]))


def test_decode_rejects_kwargs_with_keys_that_are_not_strings() -> None:
    # JSON object keys are always strings; msgpack maps may have bytes keys.
    msgpack = pytest.importorskip("msgpack")
    payload = base64.b64encode(msgpack.packb([[], {b"to": 1}], use_bin_type=True)).decode()
    data = body_bytes(content_type="application/x-msgpack", payload=payload, args=..., kwargs=...)

    with pytest.raises(MessageError, match="'kwargs' must be an object with string keys"):
        decode(data, accept=frozenset({"json", "msgpack"}))


def test_decode_rejects_pickle_unless_the_worker_accepts_it() -> None:
    data = encode(Envelope("t", (1,)), get_codec("pickle"))

    with pytest.raises(MessageError, match="'application/x-python-pickle' is not accepted"):
        decode(data)


def test_decode_rejects_msgpack_on_a_worker_that_accepts_only_json() -> None:
    data = encode(Envelope("t", (1,)), get_codec("msgpack"))

    with pytest.raises(
        MessageError, match=re.escape("not accepted by this worker (accepted: json)")
    ):
        decode(data)


def test_decode_rejects_an_unknown_content_type() -> None:
    with pytest.raises(MessageError, match="unknown content type 'text/yaml'"):
        decode(body_bytes(content_type="text/yaml"))


def test_decode_rejects_a_payload_that_is_not_base64() -> None:
    data = body_bytes(content_type="application/x-msgpack", payload="%%% not base64 %%%")

    with pytest.raises(MessageError, match="payload does not decode"):
        decode(data, accept=frozenset({"json", "msgpack"}))


def test_decode_rejects_a_codec_body_without_a_payload() -> None:
    data = body_bytes(content_type="application/x-msgpack")

    with pytest.raises(MessageError, match="field 'payload' is missing"):
        decode(data, accept=frozenset({"json", "msgpack"}))


def test_decode_rejects_a_payload_the_codec_cannot_read() -> None:
    payload = base64.b64encode(b"\xc1 is never valid msgpack").decode()
    data = body_bytes(content_type="application/x-msgpack", payload=payload)

    with pytest.raises(MessageError, match="payload does not decode"):
        decode(data, accept=frozenset({"json", "msgpack"}))


def test_pickle_round_trips_only_when_explicitly_accepted() -> None:
    envelope = Envelope("t", (dt.date(2024, 1, 2),))

    decoded = decode(encode(envelope, get_codec("pickle")), accept=frozenset({"pickle"}))

    assert decoded.args == (dt.date(2024, 1, 2),)


@pytest.mark.parametrize(
    "json_backend",
    [
        "orjson",
        pytest.param("stdlib"),
    ],
    indirect=True,
)
def test_decode_rejects_deeply_nested_json_with_a_message_error(json_backend: str) -> None:
    with pytest.raises(MessageError, match="not JSON"):
        decode(b"[" * 100_000)


@pytest.mark.parametrize(
    "json_backend",
    [
        "orjson",
        pytest.param("stdlib"),
    ],
    indirect=True,
)
def test_peek_id_returns_none_for_deeply_nested_json(json_backend: str) -> None:
    assert peek_id(b"[" * 100_000) is None


# -- size limits -----------------------------------------------------------------------------


def test_encode_rejects_a_body_over_the_size_limit_and_names_the_task() -> None:
    envelope = Envelope("shop.upload", ("x" * 2000,))

    with pytest.raises(
        MessageTooLarge, match=r"'shop\.upload' is \d+ bytes, over the limit of 1000"
    ):
        encode(envelope, JSON, max_size=1000)


def test_encode_allows_a_body_of_exactly_the_limit() -> None:
    envelope = Envelope("t", ("x" * 500,))
    size = len(encode(envelope, JSON))

    assert len(encode(envelope, JSON, max_size=size)) == size
    with pytest.raises(MessageTooLarge):
        encode(envelope, JSON, max_size=size - 1)


def test_decode_rejects_a_body_over_the_size_limit_before_parsing_it() -> None:
    with pytest.raises(MessageTooLarge, match="2000 bytes, over the limit of 1000"):
        decode(b"x" * 2000, max_size=1000)


def test_message_too_large_is_a_message_error() -> None:
    assert issubclass(MessageTooLarge, MessageError)


# -- arguments JSON cannot hold fail at send time ----------------------------------------------


@pytest.mark.parametrize(
    "value",
    [{1, object()}, object(), [dt.datetime(2024, 1, 2), 1j], {"d": object()}, 1j],
    ids=["set-of-object", "object", "nested-complex", "dict-of-object", "complex"],
)
def test_encode_rejects_an_argument_json_cannot_hold_and_names_the_task(
    value: Any, json_backend: str
) -> None:
    envelope = Envelope("shop.charge", (value,))

    with pytest.raises(
        MessageError, match=re.escape("arguments of task 'shop.charge' cannot be encoded as json")
    ):
        encode(envelope, JSON)


def test_encode_rejects_a_keyword_argument_json_cannot_hold(json_backend: str) -> None:
    with pytest.raises(MessageError, match=re.escape("task 'shop.charge'")):
        encode(Envelope("shop.charge", kwargs={"when": {1, object()}}), JSON)


def test_encode_rejects_an_argument_msgpack_cannot_hold() -> None:
    with pytest.raises(
        MessageError, match=re.escape("task 'shop.charge' cannot be encoded as msgpack")
    ):
        encode(Envelope("shop.charge", ({1, object()},)), get_codec("msgpack"))


@pytest.mark.parametrize(
    "json_backend",
    [
        pytest.param("orjson"),
        "stdlib",
    ],
    indirect=True,
)
@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"]
)
def test_encode_rejects_arguments_that_are_not_finite_numbers(
    value: float, json_backend: str
) -> None:
    with pytest.raises(MessageError, match="arguments of task 't' hold NaN or an infinity"):
        encode(Envelope("t", (value,)), JSON)


# -- peek_id -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01garbage",
        b"[1, 2]",
        b'"just a string"',
        b'{"id": 7}',
        b'{"task": "t"}',
        b"{not json",
    ],
)
def test_peek_id_returns_none_for_a_body_without_a_readable_id(data: bytes) -> None:
    assert peek_id(data) is None


def test_peek_id_finds_the_id_of_an_otherwise_malformed_body() -> None:
    assert peek_id(b'{"id": "abc", "v": 99}') == "abc"


def test_peek_id_finds_the_id_of_a_valid_body() -> None:
    envelope = Envelope("t")

    assert peek_id(encode(envelope, JSON)) == envelope.id


def test_known_field_types_do_not_let_a_bad_body_through() -> None:
    # decode remembers the field types of bodies that passed; a later body with a wrong
    # type, a missing field, a bool for an int or an empty id must still be refused.
    good = body_bytes()
    assert decode(good).task == "t"
    assert decode(good).task == "t"  # the second time through the remembered types
    for changes, problem in [({"priority": True}, "'priority' has a wrong type"),
                             ({"task": 5}, "'task' has a wrong type"),
                             ({"queue": ...}, "'queue' is missing"),
                             ({"id": ""}, "'id' is empty"),
                             ({"retries": -1}, "'retries' is negative"),
                             ({"headers": []}, "'headers' has a wrong type")]:
        with pytest.raises(MessageError, match=re.escape(problem)):
            decode(body_bytes(**changes))
    with pytest.raises(MessageError, match="surrogate"):  # orjson or the field check
        decode(good.replace(b'"task":"t"', b'"task":"\\ud800"'))


@pytest.mark.parametrize("codec_name", ["json", "pickle"])
def test_encode_fields_writes_the_bytes_encode_writes_for_the_same_envelope(
    codec_name: str,
) -> None:
    from hubbub._send_options import plain_fields
    from hubbub._task_options import TaskOptions
    from hubbub.message import encode_fields
    from hubbub.signing import Signer

    options = TaskOptions(name="shop.add", queue="fast", priority=7, retries=3, timeout=9.5)
    envelope = Envelope("shop.add", (1, dt.date(2024, 1, 2)), {"y": [1.5, None]}, id="abc",
                        queue="fast", priority=7, max_retries=3, timeout=9.5,
                        created_at=1700000000.25)
    fields = plain_fields(options, "default", SendOptions())
    assert fields is not None
    body = {**fields, "id": "abc", "created_at": 1700000000.25}
    codec, signer = get_codec(codec_name), Signer({"k1": "0123456789abcdef0123"})

    assert encode_fields(body.copy(), envelope.args, envelope.kwargs, codec) == encode(
        envelope, codec)
    assert encode_fields(body.copy(), envelope.args, envelope.kwargs, codec,
                         signer=signer) == encode(envelope, codec, signer=signer)


def test_encode_fields_words_its_errors_as_encode_does() -> None:
    from hubbub.message import encode_fields

    envelope = Envelope("t", (1, object()), id="abc")
    body = {"v": VERSION, **{k: v for k, v in json_loads(encode(Envelope("t", id="abc"),
                                                                get_codec("json"))).items()
                             if k not in ("args", "kwargs")}}
    with pytest.raises(MessageError) as old:
        encode(envelope, get_codec("json"))
    with pytest.raises(MessageError) as new:
        encode_fields(body, envelope.args, envelope.kwargs, get_codec("json"))
    assert str(new.value) == str(old.value)
    with pytest.raises(MessageTooLarge):
        encode_fields(dict(body), (), {}, get_codec("json"), max_size=10)


@pytest.mark.parametrize("send", [
    SendOptions(countdown=5), SendOptions(eta=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),
    SendOptions(expires=10), SendOptions(task_id="mine"), SendOptions(headers={"a": 1}),
    SendOptions(priority=12),
])
def test_a_call_with_a_time_an_id_headers_or_a_bad_priority_is_not_plain(
    send: SendOptions,
) -> None:
    from hubbub._send_options import plain_fields
    from hubbub._task_options import TaskOptions

    assert plain_fields(TaskOptions(name="t"), "default", send) is None
    assert plain_fields(TaskOptions(name="t", expires=5), "default", SendOptions()) is None


def test_a_new_id_is_a_random_uuid4_in_hex() -> None:
    ids = {new_id() for _ in range(200)}  # canvas nodes and envelopes take theirs from it

    assert len(ids) == 200
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert (parsed.hex, parsed.version, parsed.variant) == (value, 4, uuid.RFC_4122)


# -- the quick path of a usual message ---------------------------------------------------------


def test_a_plain_message_decodes_to_the_envelope_it_was_encoded_from_every_time() -> None:
    envelope = Envelope("t", (1, "two", [3.5]), {"k": {"nested": None}}, queue="q",
                        expires=1_700_000_000.5, headers={"h": 1})
    data = encode(envelope, JSON)

    # The first decode checks each field; later ones of the same field types take the quick
    # path, and must give the same envelope.
    assert [decode(data) for _ in range(3)] == [envelope] * 3


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"task": ""}, "field 'task' is empty"),
        ({"id": ""}, "field 'id' is empty"),
        ({"queue": ""}, "field 'queue' is empty"),
        ({"retries": -1}, "field 'retries' is negative"),
        ({"max_retries": -2}, "field 'max_retries' is negative"),
        ({"args": {"a": 1}}, "'args' must be a list"),
        ({"kwargs": [1]}, "'kwargs' must be an object"),
        ({"args": ...}, "'args' must be a list"),
    ],
)
def test_a_bad_message_is_refused_after_good_ones_of_the_same_field_types(
        changes: dict[str, Any], error: str) -> None:
    decode(body_bytes())  # its field types are known now: the quick path is tried first
    with pytest.raises(MessageError, match=error):
        decode(body_bytes(**changes))


def test_a_plain_json_message_is_refused_by_a_worker_that_does_not_accept_json() -> None:
    decode(body_bytes())
    with pytest.raises(MessageError, match="not accepted"):
        decode(body_bytes(), accept=frozenset({"msgpack"}))


def test_tagged_arguments_and_a_canvas_are_unpacked_after_plain_messages() -> None:
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    plain = Envelope("t", (1,), {})
    tagged = Envelope("t", (when,), {"at": when}, canvas={"chain": [{"when": when}]})
    decode(encode(plain, JSON))

    assert decode(encode(tagged, JSON)) == tagged
