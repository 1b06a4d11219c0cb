"""The one bridge from synchronous code to the async core.

A private event loop runs on a daemon thread; sync calls submit coroutines to it and wait.
Code already on another event loop awaits the same coroutines through ``run_async``. After
a fork the child gets a fresh loop, because threads do not survive ``fork``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# Event loops that live for one job: an ``async def`` task run by a thread or a child
# process gets an ``asyncio.run`` of its own. Their sends go through the bridge's connections,
# open already (a thread hop: about 0.5 ms), not through connections of the loop's own that
# would be opened for the job and closed with it (3 ms on Redis, 20 ms on RabbitMQ).
_ONE_JOB_LOOPS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def one_job_loop() -> None:
    """Mark the running loop as one that lives for a single job (see ``_ONE_JOB_LOOPS``)."""
    _ONE_JOB_LOOPS.add(asyncio.get_running_loop())


def lives_for_one_job(loop: asyncio.AbstractEventLoop) -> bool:
    return loop in _ONE_JOB_LOOPS


class Bridge:
    """Runs coroutines on a private loop thread, for sync callers and for other loops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="hubbub-bridge",
                                          daemon=True)
                thread.start()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return self._loop

    def runs(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether ``loop`` is this process's bridge loop (starts none)."""
        return loop is self._loop and self._pid == os.getpid()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to completion from synchronous code and return its result."""
        loop = self.loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()
            raise RuntimeError("a sync hubbub call was made on hubbub's own bridge loop")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the bridge loop from whatever loop the caller is on."""
        loop = self.loop()
        if asyncio.get_running_loop() is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def stop(self) -> None:
        """Stop and close the loop (the next call starts a new one)."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None or self._pid != os.getpid():
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()
