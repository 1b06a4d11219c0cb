"""The parent/child protocol of the process pools (prefork, hybrid, gevent).

One stream socket (``socket.socketpair``) per child. Every message is one frame: an 8-byte
big-endian length, then a pickle of a tuple of plain data (``Job`` and ``Outcome`` are frozen
dataclasses of built-in types). Pickle is safe here because both ends are this worker's own
processes; nothing from the broker is unpickled that was not already decoded by the parent.

Parent to child::

    ChildSpec                       first frame: what to import and how to run
    ("run", seq, job)               run a job; ``seq`` is the parent's number for it
    ("stop",)                       finish and exit (idle children only)

Child to parent::

    ("ready", pid)                  the app is imported; send work
    ("error", message)              the app could not be loaded; the child exits
    ("done", seq, outcome, rss)     a job finished; ``rss`` is the child's resident MiB

Job numbers, not task ids, key the replies: a hybrid or gevent child runs several jobs at
once, and the same task id can legitimately be in flight twice (a redelivered message).
A child that dies closes its end: the parent reads EOF and learns the exit status.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import resource
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Any

FRAME = struct.Struct("!Q")


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """What a child needs to serve: plain data, sent as the first frame.

    Attributes:
        import_path: "module:attr" of the Hub the child imports.
        mode: "serial" (prefork), "asyncio" (hybrid) or "gevent".
        slots: jobs the child runs at once.
        sys_path: the parent's ``sys.path``, so the child finds the same modules.
        log_level: the parent's root log level, or None when it configured no logging.
        block_warning: seconds a task may block a child's event loop before a warning.
    """

    import_path: str
    mode: str
    slots: int
    sys_path: tuple[str, ...]
    log_level: int | None = None
    block_warning: float | None = None


def pack(message: Any) -> bytes:
    """One frame holding ``message``."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(payload)) + payload


def unpack(payload: bytes) -> Any:
    """The message in a frame's payload."""
    return pickle.loads(payload)  # noqa: S301 - both ends are this worker's processes


def read_exactly(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes from a blocking socket, or None at EOF."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def receive(sock: socket.socket) -> Any:
    """The next message from a blocking socket; raises EOFError when the other end closed."""
    header = read_exactly(sock, FRAME.size)
    if header is None:
        raise EOFError("the other end closed the socket")
    (size,) = FRAME.unpack(header)
    payload = read_exactly(sock, size)
    if payload is None:
        raise EOFError("the other end closed the socket mid-frame")
    return unpack(payload)


async def read_message(reader: asyncio.StreamReader) -> Any:
    """The next message from a stream; raises ``asyncio.IncompleteReadError`` at EOF."""
    (size,) = FRAME.unpack(await reader.readexactly(FRAME.size))
    return unpack(await reader.readexactly(size))


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
