"""A wake-up on writes to a file, read on the event loop (Linux inotify through ctypes).

SQLite tells other processes nothing when it commits; they must look. Looking often costs
CPU while idle, looking seldom costs latency. On Linux a commit in WAL mode writes to the
``-wal`` file (and a checkpoint to the database file), and inotify reports those writes at
once: a waiter sleeps until a write happens, then looks. Elsewhere (or when inotify cannot be
set up) :func:`open_watch` returns None and callers keep polling.

A wake-up is a hint, never the truth: the caller always reads ``PRAGMA data_version`` after
it, since the write of a commit's frames comes just before the commit becomes visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import sys

__all__ = ["FileWatch", "open_watch"]

log = logging.getLogger("hubbub.sqlite")

_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_IN_MODIFY = 0x2
_IN_CREATE = 0x100
_IN_MOVED_TO = 0x80
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


class FileWatch:
    """Wakes :meth:`wait` when a file of ``names`` in ``folder`` is written or created.

    Bound to the event loop it was opened on; :meth:`close` on that loop.
    """

    def __init__(self, fd: int, names: frozenset[bytes], loop: asyncio.AbstractEventLoop
                 ) -> None:
        self.fd = fd
        self.names = names
        self.loop = loop
        self._written = asyncio.Event()
        loop.add_reader(fd, self._read)

    def arm(self) -> None:
        """Forget earlier writes: call before looking, so that a write after the look wakes
        the next :meth:`wait` (and none is lost between the look and the wait)."""
        self._written.clear()

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a write since :meth:`arm`; True if one came."""
        if self._written.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._written.wait(), timeout)
        return self._written.is_set()

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return
        except OSError as exc:  # the watch broke: wake waiters, they look and wait again
            log.debug("inotify read failed: %s", exc)
            self._written.set()
            return
        offset = 0
        while offset + _EVENT.size <= len(data):
            _wd, _mask, _cookie, size = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size: offset + _EVENT.size + size].rstrip(b"\0")
            offset += _EVENT.size + size
            if name in self.names:
                self._written.set()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def open_watch(path: str) -> FileWatch | None:
    """A watch of writes to SQLite file ``path`` (and its ``-wal``) on the running loop, or
    None where inotify is not available (not Linux, no libc, out of watches)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only here: most processes never wait on an SQLite file
    import ctypes.util

    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    fd = init(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        return None
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if add(fd, os.fsencode(folder), _IN_MODIFY | _IN_CREATE | _IN_MOVED_TO) < 0:
        os.close(fd)
        return None
    base = os.fsencode(os.path.basename(path))
    try:
        return FileWatch(fd, frozenset({base, base + b"-wal"}), asyncio.get_running_loop())
    except (NotImplementedError, RuntimeError):  # a loop without add_reader
        os.close(fd)
        return None
