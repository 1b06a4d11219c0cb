"""Values beyond plain JSON: what travels on each codec, what is refused, and at what cost."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import re
import sys
import uuid
from collections import namedtuple
from collections.abc import Iterator
from typing import Any

import pytest

from hubbub import Hub
from hubbub import _tagging as tagging_module
from hubbub import codecs as codecs_module
from hubbub.codecs import get_codec, json_dumps, json_loads, pack, unregister_type
from hubbub.errors import ConfigurationError, MessageError, ResultError
from hubbub.job import Failed, Succeeded
from hubbub.message import Envelope, decode, encode
from hubbub.results.base import ResultRecord, State, decode_record, encode_record
from hubbub.worker.execute import success, unencodable

PARIS = dt.timezone(dt.timedelta(hours=2), "CEST")

SAMPLES: dict[str, Any] = {
    "datetime-aware": dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=PARIS),
    "datetime-utc": dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC),
    "datetime-naive": dt.datetime(2024, 5, 6, 7, 8, 9, 5),
    "date": dt.date(2024, 2, 29),
    "time": dt.time(23, 59, 59, 999999),
    "time-aware": dt.time(1, 2, 3, tzinfo=dt.UTC),
    "timedelta": dt.timedelta(days=-3, seconds=5, microseconds=7),
    "decimal": decimal.Decimal("1234.5600"),
    "decimal-nan": decimal.Decimal("NaN"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "bytes": b"\x00\xff raw \x80",
    "empty-bytes": b"",
    "set": {1, "two", (3, 4)},
    "frozenset": frozenset({dt.date(2024, 1, 1), 2}),
    "tuple": (1, "x", None),
    "nested-tuples": [(1, (2, (3,))), {"k": (dt.date(2024, 1, 1),)}],
    "empty-tuple": (),
    "dict-with-the-tag-key": {"__hubbub__": "datetime", "v": (1, 2)},
    "plain": {"a": [1, 2.5, None, True, "x"]},
}
CODECS = ["json", "msgpack", "pickle"]


def same(got: Any, want: Any) -> bool:
    """Equal, and of exactly the same types all the way down (a tuple is not a list)."""
    if type(got) is not type(want):
        return False
    if isinstance(want, dict):
        return got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    if isinstance(want, list | tuple):
        return len(got) == len(want) and all(map(same, got, want))
    if isinstance(want, decimal.Decimal) and want.is_nan():
        return got.is_nan()
    if isinstance(want, dt.datetime | dt.time):
        return got == want and got.utcoffset() == want.utcoffset()
    return bool(got == want)


def accept_for(codec: str) -> frozenset[str]:
    return frozenset({"json", codec})


@dataclasses.dataclass(frozen=True)
class Money:
    amount: decimal.Decimal
    currency: str


@pytest.fixture
def money() -> Iterator[str]:
    """``Money`` registered for one test (the registry is per process)."""
    name = "tests.Money"
    codecs_module.register_type(Money, name=name,
                                encode=lambda m: [m.amount, m.currency],
                                decode=lambda v: Money(*v))
    try:
        yield name
    finally:
        unregister_type(name)


# -- every type on every codec ---------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("value", SAMPLES.values(), ids=SAMPLES.keys())
def test_an_argument_of_each_type_round_trips_on_each_codec(
    value: Any, codec: str, json_backend: str
) -> None:
    envelope = Envelope("t", (value, [value]), {"kw": value})

    decoded = decode(encode(envelope, get_codec(codec)), accept=accept_for(codec))

    assert same(decoded.args, (value, [value]))
    assert same(decoded.kwargs, {"kw": value})


@pytest.mark.parametrize("value", SAMPLES.values(), ids=SAMPLES.keys())
def test_a_result_of_each_type_round_trips_through_the_record(
    value: Any, json_backend: str
) -> None:
    record = ResultRecord("id", State.SUCCESS, task="t", value={"v": value, "l": [value]})

    assert same(decode_record(encode_record(record)).value, record.value)
    assert unencodable(value) is None


@pytest.mark.parametrize("codec", CODECS)
def test_a_registered_type_round_trips_on_each_codec(money: str, codec: str) -> None:
    value = Money(decimal.Decimal("9.99"), "EUR")
    envelope = Envelope("t", (value,), {"when": (value, dt.date(2024, 1, 1))})

    decoded = decode(encode(envelope, get_codec(codec)), accept=accept_for(codec))

    assert decoded.args == (value,)
    assert same(decoded.kwargs["when"], (value, dt.date(2024, 1, 1)))
    assert same(decoded.args[0].amount, decimal.Decimal("9.99"))  # tagged inside its encoding


def test_a_registered_type_round_trips_through_the_record(money: str) -> None:
    value = [Money(decimal.Decimal("1"), "USD")]
    record = ResultRecord("id", State.SUCCESS, value=value)

    assert decode_record(encode_record(record)).value == value


def test_a_subclass_of_a_known_type_travels_as_that_type() -> None:
    class Stamp(dt.datetime):
        pass

    Point = namedtuple("Point", "x y")
    args = decode(encode(Envelope("t", (Stamp(2024, 1, 1), Point(1, 2))), get_codec("json"))).args

    assert same(args, (dt.datetime(2024, 1, 1), (1, 2)))


def test_tags_look_as_documented() -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.UTC)

    assert json_loads(get_codec("json").encode([when, (1,)])) == [
        {"__hubbub__": "datetime", "v": "2024-01-02T03:04:00+00:00"},
        {"__hubbub__": "tuple", "v": [1]},
    ]


# -- plain JSON pays nothing on decode -------------------------------------------------------


def _no_walk(value: Any) -> Any:
    raise AssertionError("a payload without tags was walked")


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_a_plain_payload_is_decoded_without_a_walk(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encode(Envelope("t", (1, "x", {"a": [1, 2]}), {"k": [None, 2.5]}), get_codec(codec))
    monkeypatch.setattr(tagging_module, "_unpack", _no_walk)

    decoded = decode(data, accept=accept_for(codec))

    assert decoded.args == (1, "x", {"a": [1, 2]})
    assert decoded.kwargs == {"k": [None, 2.5]}


def test_a_plain_result_is_decoded_without_a_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode_record(ResultRecord("id", State.SUCCESS, value={"a": [1, "x"]}))
    monkeypatch.setattr(tagging_module, "_unpack", _no_walk)

    assert decode_record(data).value == {"a": [1, "x"]}


def test_a_plain_payload_decodes_to_exactly_what_the_parser_made() -> None:
    data = get_codec("json").encode([1, "x", {"a": [1, 2]}])

    assert get_codec("json").decode(data) == json_loads(data)
    assert pack([1, "x", {"a": [1, 2]}]) == [1, "x", {"a": [1, 2]}]


def test_plain_json_bytes_are_unchanged_by_tagging() -> None:
    value = {"a": [1, 2.5, None, True, "x"]}

    assert get_codec("json").encode(value) == json_dumps(value)


# -- what is refused, and how it says so -----------------------------------------------------


class Foo:
    pass


def test_an_unencodable_result_names_its_type_and_where_it_is() -> None:
    assert unencodable([1, 2, {"when": Foo()}]) == (
        "result[2]['when']: cannot encode object of type Foo")


def test_an_unencodable_result_fails_the_task_with_that_reason(hub: Hub) -> None:
    @hub.task
    def t() -> None:
        pass

    outcome = success(t, (1, {"x": [float("nan")]}), 0.1)

    assert isinstance(outcome, Failed)
    assert outcome.error.type == "ResultNotEncodable"
    assert outcome.error.message == ("return value cannot be stored as JSON: result[1]['x'][0]: "
                                     "cannot encode float nan: JSON has no NaN or infinity")
    assert isinstance(success(t, (1, {"x": [dt.date(2024, 1, 1)]}), 0.1), Succeeded)


def test_a_registered_encode_that_raises_is_named(hub: Hub) -> None:
    hub.register_type(Foo, name="tests.Foo", encode=lambda f: 1 / 0, decode=lambda v: Foo())
    try:
        reason = unencodable({"f": Foo()})
    finally:
        unregister_type("tests.Foo")

    assert reason == ("result['f']: type 'tests.Foo' could not encode Foo: division by zero")


def test_an_unencodable_argument_names_the_task_and_the_argument() -> None:
    envelope = Envelope("shop.charge", (1,), {"order": {"items": [Foo()]}})

    with pytest.raises(MessageError, match=re.escape(
        "arguments of task 'shop.charge' cannot be encoded as json: "
        "kwargs['order']['items'][0]: cannot encode object of type Foo"
    )):
        encode(envelope, get_codec("json"))


def tagged_body(args: list[Any]) -> bytes:
    body = {"v": 1, "task": "shop.charge", "id": "i", "queue": "default", "priority": 0,
            "eta": None, "expires": None, "retries": 0, "max_retries": 0, "timeout": None,
            "soft_timeout": None, "parent_id": None, "root_id": None, "group_id": None,
            "headers": {}, "created_at": 1.0, "content_type": "application/json",
            "args": args, "kwargs": {}}
    return json_dumps(body)


def test_an_unknown_tag_fails_the_message_and_imports_nothing() -> None:
    data = tagged_body([{"__hubbub__": "hubbub_never_imported.Evil", "v": 1}])

    with pytest.raises(MessageError, match=re.escape(
        "arguments of task 'shop.charge' cannot be decoded: unknown type tag "
        "'hubbub_never_imported.Evil': register it with hub.register_type()"
    )):
        decode(data)
    assert "hubbub_never_imported" not in sys.modules


@pytest.mark.parametrize(
    ("arg", "reason"),
    [
        ({"__hubbub__": "datetime", "v": "not a date"}, "type 'datetime' could not decode"),
        ({"__hubbub__": "datetime", "v": 5}, "expected a string, got int"),
        ({"__hubbub__": "date", "v": "2024-01-01", "x": 1}, "malformed 'date' tag"),
        ({"__hubbub__": "set", "v": [[1]]}, "type 'set' could not decode"),
        ({"__hubbub__": 7, "v": 1}, "unknown type tag 7"),
        ({"__hubbub__": "bytes", "v": "%%%"}, "type 'bytes' could not decode"),
    ],
    ids=["bad-datetime", "wrong-type", "extra-key", "unhashable", "tag-not-text", "bad-base64"],
)
def test_a_malformed_tag_fails_the_message_with_its_reason(arg: Any, reason: str) -> None:
    with pytest.raises(MessageError, match=re.escape(reason)):
        decode(tagged_body([arg]))


def test_an_unknown_tag_in_a_msgpack_payload_fails_the_message() -> None:
    msgpack = pytest.importorskip("msgpack")
    payload = msgpack.packb([[{"__hubbub__": "nope", "v": 1}], {}], use_bin_type=True)
    raw = json_loads(tagged_body([]))
    del raw["args"], raw["kwargs"]
    raw.update(content_type="application/x-msgpack", payload=base64.b64encode(payload).decode())

    reason = "'shop.charge' cannot be decoded: unknown type tag 'nope'"
    with pytest.raises(MessageError, match=re.escape(reason)):
        decode(json_dumps(raw), accept=frozenset({"json", "msgpack"}))


def test_an_unknown_tag_in_a_result_is_a_result_error(money: str) -> None:
    data = encode_record(ResultRecord("r1", State.SUCCESS, value=Money(decimal.Decimal(1), "X")))
    unregister_type(money)

    with pytest.raises(ResultError, match=re.escape(
        "result of task 'r1' cannot be decoded: unknown type tag 'tests.Money'"
    )):
        decode_record(data)


# -- register_type ---------------------------------------------------------------------------


def test_a_name_registered_for_another_class_is_refused(hub: Hub, money: str) -> None:
    class Other:
        pass

    with pytest.raises(ConfigurationError, match=re.escape(
        "type name 'tests.Money' is already registered for tests.unit.test_types.Money"
    )):
        hub.register_type(Other, name=money, encode=str, decode=str)


def test_a_class_registered_under_a_second_name_is_refused(hub: Hub, money: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape("already registered as 'tests.Money'")):
        hub.register_type(Money, name="tests.Money2", encode=str, decode=str)


def test_registering_the_same_class_and_name_again_is_allowed(hub: Hub, money: str) -> None:
    hub.register_type(Money, name=money, encode=lambda m: [m.amount, m.currency],
                      decode=lambda v: Money(*v))


@pytest.mark.parametrize("cls", [dt.datetime, dict, str, tuple, bytes])
def test_types_that_already_travel_cannot_be_registered(hub: Hub, cls: type) -> None:
    with pytest.raises(ConfigurationError, match="already travels without registering"):
        hub.register_type(cls, name="tests.x", encode=str, decode=str)


@pytest.mark.parametrize("name", ["datetime", "tuple", "dict"])
def test_built_in_tag_names_are_reserved(hub: Hub, name: str) -> None:
    with pytest.raises(ConfigurationError, match="already registered for a built-in type"):
        hub.register_type(Foo, name=name, encode=str, decode=str)


def test_the_default_name_is_the_qualified_class_name(hub: Hub) -> None:
    hub.register_type(Foo, encode=lambda f: None, decode=lambda v: Foo())
    try:
        assert json_loads(get_codec("json").encode(Foo())) == {
            "__hubbub__": "tests.unit.test_types.Foo", "v": None}
    finally:
        unregister_type("tests.unit.test_types.Foo")
