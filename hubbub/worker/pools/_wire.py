"""The parent/child protocol of the process pools (prefork, hybrid, gevent).

One stream socket (``socket.socketpair``) per child. Every message is one frame: an 8-byte
big-endian length, then a pickle of a plain tuple, a tag and the frame's fields (``Job`` and
``Outcome`` are frozen dataclasses of built-in types). Pickle is safe here because both ends
are this worker's own processes; nothing from the broker is unpickled that was not already
decoded by the parent.

Each kind of frame is a ``NamedTuple`` below, and :func:`encode` / :func:`decode` are the only
code that turns one into bytes and back, so both ends name fields instead of indexing tuples.
On the wire a frame is ``(tag, *fields)``, not a pickled class: cheaper to pickle on the
sync-task hot path. The two frames every task sends, ``Run`` and ``Done``, go further: their
``Job`` and ``Outcome`` travel as plain tuples of their fields (an outcome's led by its kind's
index in ``OUTCOMES``), because pickling a slotted dataclass goes through ``copyreg`` and names
its class in every frame, which cost more than the rest of the frame.

Parent to child::

    ChildSpec     ("spec", ...)                 first frame: what to import and how to run
    Run           ("run", seq, job)             run a job; ``seq`` is the parent's number
    Cancel        ("cancel", seq, reason)       stop job ``seq`` (hybrid, gevent); it is
                                                answered by its ``Done``
    Stop          ("stop",)                     finish and exit (idle children only)

Child to parent::

    Ready         ("ready", pid)                the app is imported; send work
    LoadFailed    ("error", message)            the app could not be loaded; the child exits
    Done          ("done", seq, outcome, rss)   a job finished; ``rss``: the child's resident MiB
                                                (0.0 when the spec asks for no memory readings)
    Progress      ("progress", id, state, meta) a running task reported progress
    Leaving       ("leaving",)                  it runs nothing more and exits (over its memory
                                                limit): the jobs it has not answered never started

Frames are read in chunks (:class:`FrameReader`): one ``recv`` brings every frame the other
end has written, so replies that finish close together are taken in one wake-up.

Job numbers, not task ids, key the replies: a hybrid or gevent child runs several jobs at
once, and the same task id can legitimately be in flight twice (a redelivered message).
A child that dies closes its end: the parent reads EOF and learns the exit status.
"""

from __future__ import annotations

import asyncio
import operator
import os
import pickle
import resource
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from hubbub.job import Crashed, Failed, Job, Outcome, Rejected, Succeeded, Terminated, TimedOut

FRAME = struct.Struct("!Q")
CHUNK = 1 << 16  # bytes asked of the socket at once

# An outcome on the wire is (index here, *its fields); the order is part of the protocol.
OUTCOMES: tuple[type[Outcome], ...] = (Succeeded, Failed, Rejected, Crashed, TimedOut,
                                       Terminated)
_OUTCOME_INDEX = {kind: index for index, kind in enumerate(OUTCOMES)}


class ChildSpec(NamedTuple):
    """What a child needs to serve, sent as the first frame.

    Attributes:
        import_path: "module:attr" of the Hub the child imports.
        mode: "serial" (prefork), "asyncio" (hybrid) or "gevent".
        slots: jobs the child runs at once.
        sys_path: the parent's ``sys.path``, so the child finds the same modules.
        log_level: the parent's root log level, or None when it configured no logging.
        block_warning: seconds a task may block a child's event loop before a warning.
        log_format: "text" or "json", as the worker logs (``hubbub.logs``).
        log_file: the file the worker logs to, or None for stderr.
        broker: the worker's broker URL (None: as the app module configures it).
        results: the worker's result store URL, "none" for none (None: as the app says).
        max_memory: the pool's ``max_memory_per_child`` in MiB, or None. Without one, ``Done``
            says 0.0 MiB instead of reading ``/proc`` after every task. With one, a serial
            child over it after a task exits instead of running the jobs queued behind
            (the parent runs those elsewhere).
        loop: the event loop an "asyncio" child runs, "asyncio" or "uvloop": its worker's.
    """

    import_path: str
    mode: str
    slots: int
    sys_path: tuple[str, ...]
    log_level: int | None = None
    block_warning: float | None = None
    log_format: str = "text"
    log_file: str | None = None
    broker: str | None = None
    results: str | None = None
    max_memory: float | None = None
    loop: str = "asyncio"


class Run(NamedTuple):
    """Parent to child: run ``job``; the reply carries the same ``seq``."""

    seq: int
    job: Job


class Cancel(NamedTuple):
    """Parent to child: stop job ``seq`` (revoked with ``terminate=True``), which then ends
    with a ``Done`` whose outcome is ``Terminated(reason, ...)``, unless it ended first."""

    seq: int
    reason: str


class Stop(NamedTuple):
    """Parent to child: exit once the jobs running now are done."""


class Ready(NamedTuple):
    """Child to parent: the app is imported; ``pid`` serves."""

    pid: int


class LoadFailed(NamedTuple):
    """Child to parent: the app could not be imported (``message`` says why); it exits."""

    message: str


class Done(NamedTuple):
    """Child to parent: job ``seq`` finished with ``outcome``; ``rss`` is the child's
    resident memory in MiB afterwards."""

    seq: int
    outcome: Outcome
    rss: float


class Progress(NamedTuple):
    """Child to parent: the running task ``task_id`` reported ``state`` and ``meta``
    (``current_task().update_state``)."""

    task_id: str
    state: str
    meta: dict[str, Any] | None


class Leaving(NamedTuple):
    """Child to parent: this child runs nothing more and exits (it is over its memory limit,
    or a task ran out of memory); the jobs it has not answered never started."""


ToChild = ChildSpec | Run | Cancel | Stop
ToParent = Ready | LoadFailed | Done | Progress | Leaving
Frame = ToChild | ToParent

_TAGS: dict[type[Frame], str] = {ChildSpec: "spec", Run: "run", Cancel: "cancel", Stop: "stop",
                                 Ready: "ready", LoadFailed: "error", Done: "done",
                                 Progress: "progress", Leaving: "leaving"}
_KINDS: dict[str, type[Frame]] = {tag: kind for kind, tag in _TAGS.items()}


_job_fields = operator.attrgetter(*Job.__slots__)  # a job's fields, as a tuple, in order


def _flattener(kind: type[Outcome]) -> Callable[[Outcome], tuple[Any, ...]]:
    """What turns an outcome of ``kind`` (two fields or more) into (its index, *fields)."""
    index, fields = _OUTCOME_INDEX[kind], operator.attrgetter(*kind.__slots__)
    return lambda outcome: (index, *fields(outcome))


_outcome_fields = {kind: _flattener(kind) for kind in OUTCOMES}


def _plain(frame: Frame) -> tuple[Any, ...]:
    """``frame`` as the tuple that is pickled: its tag and fields, a job or outcome flattened."""
    if type(frame) is Run:
        return ("run", frame.seq, _job_fields(frame.job))
    if type(frame) is Done:
        return ("done", frame.seq, _outcome_fields[type(frame.outcome)](frame.outcome),
                frame.rss)
    return (_TAGS[type(frame)], *frame)


def encode(frame: Frame) -> bytes:
    """The bytes of ``frame`` on the wire: its length, then its tag and fields pickled.

    Raises:
        pickle.PicklingError, TypeError, AttributeError: a field cannot be pickled (a job's
            arguments or an outcome's value); nothing is sent then.
    """
    payload = pickle.dumps(_plain(frame), protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(payload)) + payload


def encode_run(seq: int, job: Job) -> bytes:
    """``encode(Run(seq, job))``, without the frame object: once per job on the way out.

    Raises:
        pickle.PicklingError, TypeError, AttributeError: the job cannot be pickled.
    """
    payload = pickle.dumps(("run", seq, _job_fields(job)), protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(payload)) + payload


def encode_done(seq: int, outcome: Outcome, rss: float) -> bytes:
    """``encode(Done(seq, outcome, rss))``, without the frame object: once per job back.

    Raises:
        pickle.PicklingError, TypeError, AttributeError: the outcome cannot be pickled.
    """
    payload = pickle.dumps(("done", seq, _outcome_fields[type(outcome)](outcome), rss),
                           protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(payload)) + payload


def decode(payload: bytes | memoryview) -> Frame:
    """The frame in a payload (the bytes after the length).

    Raises:
        ValueError: the payload is not a frame of this protocol.
    """
    message = pickle.loads(payload)  # noqa: S301 - both ends are this worker's processes
    try:
        tag = message[0]
        if tag == "run":
            return Run(message[1], Job(*message[2]))
        if tag == "done":
            kind, *fields = message[2]
            return Done(message[1], OUTCOMES[kind](*fields), message[3])
        return _KINDS[tag](*message[1:])
    except (KeyError, IndexError, TypeError, ValueError):
        raise ValueError(f"not a frame of the process pools' protocol: {message!r:.100}") from None


class FrameReader:
    """Frames out of a byte stream that arrives in chunks of any size.

    ``feed`` takes what one read returned and gives back every frame it completed, in order;
    a frame cut between two reads waits for the rest.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """The frames ``data`` completes (none while a frame is still partial).

        Raises:
            ValueError: a complete frame is not a frame of this protocol.
        """
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        start, end = 0, len(buffer)
        with memoryview(buffer) as view:
            while end - start >= FRAME.size:
                (size,) = FRAME.unpack_from(view, start)
                stop = start + FRAME.size + size
                if stop > end:
                    break
                frames.append(decode(view[start + FRAME.size:stop]))
                start = stop
        del buffer[:start]
        return frames


class Outbox:
    """Frames for one stream, written together once per turn of the event loop.

    Jobs handed to a child in one turn (a fetched batch), or replies finishing in one turn
    (hybrid), then cost one ``send`` and wake the other end once, instead of once each. The
    order of frames is kept: everything for the stream goes through ``put``.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._frames: list[bytes] = []

    def put(self, frame: bytes) -> None:
        """Queue ``frame``; it is written at the end of this turn of the loop."""
        if not self._frames:
            asyncio.get_running_loop().call_soon(self.flush)
        self._frames.append(frame)

    def flush(self) -> None:
        """Write what is queued now (nothing if the stream is closing)."""
        frames, self._frames = self._frames, []
        if frames and not self.writer.is_closing():
            self.writer.write(b"".join(frames))


def read_exactly(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes from a blocking socket, or None at EOF."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def receive(sock: socket.socket) -> Frame:
    """The next frame from a blocking socket.

    Raises:
        EOFError: the other end closed the socket.
        ValueError: what came is not a frame.
    """
    header = read_exactly(sock, FRAME.size)
    if header is None:
        raise EOFError("the other end closed the socket")
    (size,) = FRAME.unpack(header)
    payload = read_exactly(sock, size)
    if payload is None:
        raise EOFError("the other end closed the socket mid-frame")
    return decode(payload)


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """The next frame from a stream.

    Raises:
        asyncio.IncompleteReadError: the other end closed the stream.
        ValueError: what came is not a frame.
    """
    (size,) = FRAME.unpack(await reader.readexactly(FRAME.size))
    return decode(await reader.readexactly(size))


def resident_mib_of(pid: int) -> float | None:
    """Process ``pid``'s resident memory in MiB, or None where ``/proc`` cannot tell."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def resident_mib() -> float:
    """This process's resident memory in MiB (current on Linux, peak elsewhere)."""
    current = resident_mib_of(os.getpid())
    if current is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    return current
