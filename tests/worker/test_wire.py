"""The process pools' frames: each kind is typed, and on the wire a plain tagged tuple."""

from __future__ import annotations

import pickle

import pytest

from hubbub.job import Crashed, Job, Succeeded
from hubbub.worker.pools._wire import (
    FRAME,
    ChildSpec,
    Done,
    Frame,
    LoadFailed,
    Ready,
    Run,
    Stop,
    decode,
    encode,
)

FRAMES: list[Frame] = [
    ChildSpec("shop:hub", "serial", 1, ("/srv",), 20, None),
    Run(7, Job("id-1", "shop.add", (1, 2), {"x": 3}, timeout=5.0)),
    Stop(),
    Ready(4242),
    LoadFailed("ModuleNotFoundError: No module named 'shop'"),
    Done(7, Succeeded(3, 0.25), 51.5),
    Done(8, Crashed("child 4242 died with signal SIGSEGV", 1.0), 0.0),
]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda frame: type(frame).__name__)
def test_every_frame_survives_its_trip_over_the_wire(frame: Frame) -> None:
    data = encode(frame)
    (size,) = FRAME.unpack(data[:FRAME.size])
    assert size == len(data) - FRAME.size
    assert decode(data[FRAME.size:]) == frame
    assert type(decode(data[FRAME.size:])) is type(frame)


def test_a_frame_is_sent_as_a_tagged_tuple_not_as_a_pickled_class() -> None:
    job = Job("id-1", "shop.add", (1, 2), {})
    payload = encode(Run(7, job))[FRAME.size:]
    assert pickle.loads(payload) == ("run", 7, job)
    assert b"_wire" not in payload


@pytest.mark.parametrize("message", [("bogus", 1), (), "run", ("ready",)])
def test_a_payload_that_is_not_a_frame_is_refused(message: object) -> None:
    with pytest.raises(ValueError, match="not a frame"):
        decode(pickle.dumps(message))
