"""The process pools' frames: each kind is typed, and on the wire a plain tagged tuple."""

from __future__ import annotations

import pickle

import pytest

from hubbub.job import Crashed, Failed, Job, Rejected, Succeeded, Terminated, TimedOut
from hubbub.results.base import ErrorInfo
from hubbub.worker.pools._wire import (
    FRAME,
    OUTCOMES,
    ChildSpec,
    Done,
    Frame,
    FrameReader,
    Leaving,
    LoadFailed,
    Progress,
    Ready,
    Run,
    Stop,
    decode,
    encode,
    encode_done,
    encode_run,
)

FRAMES: list[Frame] = [
    ChildSpec("shop:hub", "serial", 1, ("/srv",), 20, None),
    Run(7, Job("id-1", "shop.add", (1, 2), {"x": 3}, timeout=5.0)),
    Stop(),
    Ready(4242),
    LoadFailed("ModuleNotFoundError: No module named 'shop'"),
    Done(7, Succeeded(3, 0.25), 51.5),
    Done(8, Crashed("child 4242 died with signal SIGSEGV", 1.0), 0.0),
    Done(9, Failed(ErrorInfo("ValueError", "bad"), 0.5, retry=True, countdown=2.0), 0.0),
    Done(10, Rejected("no", 0.1), 0.0),
    Done(11, TimedOut(5.0, 5.1), 0.0),
    Done(12, Terminated("revoked", 0.2), 0.0),
    Progress("id-1", "PROGRESS", {"done": 3}),
    Leaving(),
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
    assert pickle.loads(payload) == ("run", 7, ("id-1", "shop.add", (1, 2), {}, "default", 0,
                                                0, None, None, None, None, None, {}))
    assert b"_wire" not in payload
    assert b"hubbub" not in payload


def test_an_outcome_travels_as_its_kind_and_fields_without_its_class() -> None:
    payload = encode(Done(3, Succeeded({"n": 1}, 0.25), 0.0))[FRAME.size:]
    assert pickle.loads(payload) == ("done", 3, (OUTCOMES.index(Succeeded), {"n": 1}, 0.25), 0.0)
    assert b"hubbub" not in payload


def test_frames_cut_anywhere_between_reads_come_out_whole_and_in_order() -> None:
    stream = b"".join(encode(frame) for frame in FRAMES)
    for cut in (1, 3, FRAME.size, 50, len(stream)):
        reader = FrameReader()
        got: list[Frame] = []
        for start in range(0, len(stream), cut):
            got.extend(reader.feed(stream[start:start + cut]))
        assert got == FRAMES


def test_a_reader_holds_a_partial_frame_until_the_rest_comes() -> None:
    data = encode(Ready(42))
    reader = FrameReader()
    assert reader.feed(data[:-1]) == []
    assert reader.feed(data[-1:]) == [Ready(42)]


@pytest.mark.parametrize("message", [("bogus", 1), (), "run", ("ready",)])
def test_a_payload_that_is_not_a_frame_is_refused(message: object) -> None:
    with pytest.raises(ValueError, match="not a frame"):
        decode(pickle.dumps(message))


@pytest.mark.parametrize("frame", [f for f in FRAMES if isinstance(f, Run | Done)],
                         ids=lambda frame: type(frame).__name__)
def test_the_per_job_shortcuts_encode_run_and_done_frames_byte_for_byte_as_encode(
        frame: Run | Done) -> None:
    data = (encode_run(frame.seq, frame.job) if isinstance(frame, Run)
            else encode_done(frame.seq, frame.outcome, frame.rss))
    assert data == encode(frame)
