from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from typing import Any

import pytest

from hubbub import codecs as codecs_module
from hubbub.codecs import CODECS, codec_for, get_codec, json_dumps, json_loads
from hubbub.errors import ConfigurationError, MessageError


class Colour(enum.Enum):
    RED = 1


def dumps_with(backend: str, value: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """What ``json_dumps`` makes of ``value`` on one backend, read back by the stdlib (so
    escaping differences do not count), or "refused"."""
    with monkeypatch.context() as patch:
        if backend == "stdlib":
            patch.setattr(codecs_module, "_orjson", None)
        try:
            data = json_dumps(value)
        except (TypeError, ValueError):
            return "refused"
    return json.loads(data)


def loads_with(backend: str, data: bytes, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patch:
        if backend == "stdlib":
            patch.setattr(codecs_module, "_orjson", None)
        try:
            return json_loads(data)
        except ValueError:
            return "refused"


@pytest.fixture
def orjson_installed() -> None:
    pytest.importorskip("orjson")


# -- json_dumps: strict, and the same with or without orjson -----------------------------------


def test_json_dumps_is_compact(json_backend: str) -> None:
    assert json_dumps({"a": [1, 2.5, None, True, "x"]}) == b'{"a":[1,2.5,null,true,"x"]}'


def test_json_round_trips_unicode(json_backend: str) -> None:
    assert json_loads(json_dumps(["ünïcode ✓"])) == ["ünïcode ✓"]


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf"), [1.0, float("nan")]],
    ids=["nan", "inf", "-inf", "nested-nan"],
)
@pytest.mark.parametrize(
    "json_backend",
    [
        pytest.param("orjson"),
        "stdlib",
    ],
    indirect=True,
)
def test_json_dumps_writes_numbers_that_are_not_finite_as_null(
    value: Any, json_backend: str
) -> None:
    assert b"null" in json_dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        frozenset({1}),
        object(),
        dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
        dt.date(2024, 1, 2),
        dt.time(12, 0),
        b"raw",
        1j,
    ],
    ids=["set", "frozenset", "object", "datetime", "date", "time", "bytes", "complex"],
)
def test_json_dumps_refuses_what_json_cannot_hold(value: Any, json_backend: str) -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_dumps(value)


@pytest.mark.usefixtures("orjson_installed")
@pytest.mark.parametrize(
    "value",
    [
        {"nested": [1, "two", None, 3.25, False]},
        (1, 2),
        -(2**63),
        2**64 - 1,
        "ünïcode ✓",
        pytest.param(float("nan")),
        pytest.param(uuid.UUID(int=1)),
        pytest.param(Colour.RED),
        pytest.param({1: "a"}),
        pytest.param(2**64),
    ],
    ids=[
        "nested",
        "tuple",
        "min-int64",
        "max-uint64",
        "unicode",
        "nan",
        "uuid",
        "enum",
        "int-keys",
        "big-int",
    ],
)
def test_json_dumps_gives_the_same_answer_with_or_without_orjson(
    value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert dumps_with("orjson", value, monkeypatch) == dumps_with("stdlib", value, monkeypatch)


@pytest.mark.usefixtures("orjson_installed")
@pytest.mark.parametrize(
    "data",
    [
        b'{"a": [1, 2.5, null]}',
        b"not json",
        pytest.param(b"[NaN]"),
        pytest.param(b"[-Infinity]"),
    ],
    ids=["valid", "garbage", "nan", "infinity"],
)
def test_json_loads_gives_the_same_answer_with_or_without_orjson(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert loads_with("orjson", data, monkeypatch) == loads_with("stdlib", data, monkeypatch)


# -- the codec registry -------------------------------------------------------------------------


def test_get_codec_names_the_choices_for_an_unknown_serializer() -> None:
    with pytest.raises(
        ConfigurationError, match="unknown serializer 'yaml'; choose one of: json, msgpack, pickle"
    ):
        get_codec("yaml")


def test_only_pickle_is_marked_trusted_only() -> None:
    assert {name for name, codec in CODECS.items() if codec.trusted_only} == {"pickle"}


@pytest.mark.parametrize("name", ["json", "msgpack", "pickle"])
def test_every_codec_round_trips_a_call(name: str) -> None:
    codec = get_codec(name)
    call = [[1, "a", None], {"k": [2.5, True]}]

    assert codec.decode(codec.encode(call)) == call


def test_codec_for_finds_an_accepted_content_type() -> None:
    assert codec_for("application/x-msgpack", frozenset({"json", "msgpack"})).name == "msgpack"


def test_codec_for_refuses_pickle_when_only_json_is_accepted() -> None:
    with pytest.raises(MessageError, match="not accepted by this worker"):
        codec_for("application/x-python-pickle", frozenset({"json"}))


def test_codec_for_refuses_an_unknown_content_type() -> None:
    with pytest.raises(MessageError, match="unknown content type 'text/plain'"):
        codec_for("text/plain", frozenset(CODECS))
