"""``Control``: remote control from Python, ``hub.control``; the CLI is built on it.

::

    hub.control.ping()                               # every worker
    hub.control.inspect(destination=["w1"]).active()  # what w1 runs now
    hub.control.pool_grow(2, destination=["w1"])
    hub.control.shutdown(destination=["w1"])

Each call subscribes to ``replies``, then sends one command on ``control``, then collects
replies until every addressed worker answered or ``timeout`` ran out. A broadcast (no
``destination``) waits until every worker in the worker registry answered, or the timeout.
The answer is one :class:`~hubbub.control.commands.Reply` per worker that answered, sorted
by worker name; a worker for which the command failed answers with ``error`` set.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from hubbub.control.commands import (
    CONTROL,
    REPLIES,
    Command,
    ControlTimeout,
    Refused,
    Reply,
    decode_reply,
    encode_command,
)
from hubbub.control.registry import Registry

if TYPE_CHECKING:
    from hubbub.hub import Hub

__all__ = ["DEFAULT_TIMEOUT", "Control", "Inspector", "TaskSummary"]

DEFAULT_TIMEOUT = 1.5  # seconds to wait for replies
READ_EVERY = 0.1  # seconds one read of the replies waits at most

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """A task a worker holds, as ``inspect active|reserved|scheduled`` shows it.

    Attributes:
        id: the task id.
        name: the task name.
        args: a short preview of its arguments (cut, never the full values).
        queue: the queue it came from.
        lane: the worker lane holding it (its queues, comma-separated).
        started_at: when it started (epoch seconds), None while it waits for a slot.
        eta: when it is due (epoch seconds), if it has an eta.
        attempts: how many times the broker handed it out.
    """

    id: str
    name: str
    args: str = ""
    queue: str = ""
    lane: str = ""
    started_at: float | None = None
    eta: float | None = None
    attempts: int = 1

    @classmethod
    def from_json(cls, data: Any) -> TaskSummary | None:
        """The summary in ``data``, or None when it is not one; never raises."""
        if not isinstance(data, dict):
            return None
        raw = {k: data.get(k) for k in ("id", "name", "args", "queue", "lane")}
        text = {k: v for k, v in raw.items() if isinstance(v, str)}
        if len(text) != len(raw):
            return None
        times = {k: data.get(k) for k in ("started_at", "eta")}
        if not all(v is None or _number(v) for v in times.values()):
            return None
        attempts = data.get("attempts")
        return cls(text["id"], text["name"], text["args"], text["queue"], text["lane"],
                   times["started_at"], times["eta"],
                   attempts if isinstance(attempts, int) and not isinstance(attempts, bool)
                   else 1)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tasks(value: Any) -> list[TaskSummary]:
    found = [TaskSummary.from_json(v) for v in value] if isinstance(value, list) else []
    return [t for t in found if t is not None]


def _names(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _typed(replies: list[Reply[Any]], convert: Callable[[Any], T]) -> list[Reply[T]]:
    return [Reply(r.worker, convert(r.value), r.error, r.id) for r in replies]


class Control:
    """Remote control of a hub's workers (``hub.control``).

    Every method takes ``destination`` (worker names; default: every worker) and
    ``timeout`` (seconds to wait for replies; default ``timeout``, an attribute set to 1.5)
    and returns the replies, one per worker that answered, sorted by worker name.

    Raises (every method):
        ControlTimeout: an addressed worker did not answer in time (``missing`` names it;
            ``replies`` holds those that did), or, for a broadcast, no worker answered.
        ConfigurationError: the broker carries no control plane.
        TransportUnavailable: the broker cannot be reached.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sender = f"{socket.gethostname()}:{os.getpid()}"
        self.timeout = DEFAULT_TIMEOUT  # seconds, when a call gives none

    # -- the one way commands are sent ------------------------------------------------------

    def call(self, command: str, arguments: dict[str, Any] | None = None, *,
             destination: Sequence[str] | None = None,
             timeout: float | None = None) -> list[Reply[Any]]:
        """Send ``command`` and collect the replies (from sync code)."""
        return self.hub.bridge.run(self.call_async(command, arguments, destination=destination,
                                                   timeout=timeout))

    async def call_async(self, command: str, arguments: dict[str, Any] | None = None, *,
                         destination: Sequence[str] | None = None,
                         timeout: float | None = None) -> list[Reply[Any]]:
        """Send ``command`` and collect the replies, on the caller's event loop.

        Args:
            command: one of :data:`~hubbub.control.commands.COMMANDS`.
            arguments: its arguments (JSON values).
            destination: worker names, or None for every worker.
            timeout: seconds to wait for replies (default: ``self.timeout``, 1.5).

        Returns:
            One reply per worker that answered, sorted by worker name.

        Raises:
            ControlTimeout: an addressed worker did not answer in time, or no worker
                answered a broadcast.
            ValueError: ``destination`` is given but names no worker.
            ConfigurationError: the broker carries no control plane.
            TransportUnavailable: the broker cannot be reached.
        """
        wait = self.timeout if timeout is None else max(0.0, float(timeout))
        names = None if destination is None else tuple(dict.fromkeys(destination))
        if names is not None and not names:
            raise ValueError("destination names no worker; leave it out to address every one")
        sent = Command(command, dict(arguments or {}), names, self.sender, REPLIES)
        plane = self.hub.open_plane()
        await plane.connect()
        try:
            expected = set(names) if names is not None else await self._registered(wait)
            subscription = await plane.subscribe(REPLIES)
            try:
                await plane.publish(CONTROL, [encode_command(sent, self.hub.signer)])
                replies = await self._collect(subscription.read, sent, expected, wait)
            finally:
                await subscription.close()
        finally:
            await plane.close()
        found = sorted(replies.values(), key=lambda r: r.worker)
        if names is not None:
            missing = [n for n in names if n not in replies]
            if missing:
                raise ControlTimeout(
                    f"no reply to {command} from worker{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(repr(m) for m in missing)} within {wait:g}s: not running, "
                    "or on another broker (`hubbub workers` lists the live ones)",
                    found, missing)
        elif not found:
            raise ControlTimeout(f"no worker answered {command} within {wait:g}s: is a worker "
                                 "running on this broker? (`hubbub workers` lists them)")
        return found

    async def _registered(self, wait: float) -> set[str] | None:
        """The workers in the registry, to stop waiting once all answered; None when it
        cannot say (no result store, or it failed): then the broadcast waits the timeout."""
        results = self.hub.open_results()
        if results is None:
            return None
        try:
            async with asyncio.timeout(wait / 2):
                await results.connect()
                try:
                    names = {info.name for info in await Registry(results).workers()}
                finally:
                    await results.close()
        except Exception:  # the registry only shortens the wait
            return None
        return names or None

    async def _collect(self, read: Callable[[float], Awaitable[list[bytes]]], sent: Command,
                       expected: set[str] | None, wait: float) -> dict[str, Reply[Any]]:
        replies: dict[str, Reply[Any]] = {}
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (expected is not None and expected <= replies.keys()):
                return replies
            for data in await read(min(left, READ_EVERY)):
                reply = decode_reply(data, self.hub.signer)
                if isinstance(reply, Refused) or reply.id != sent.id:
                    continue  # another sender's, or foreign or unsigned data
                if sent.destination is None or reply.worker in sent.destination:
                    replies.setdefault(reply.worker, reply)

    # -- commands ---------------------------------------------------------------------------

    def ping(self, *, destination: Sequence[str] | None = None,
             timeout: float | None = None) -> list[Reply[str]]:
        """Ask workers to answer; each live one replies ``"pong"``."""
        return _typed(self.call("ping", destination=destination, timeout=timeout), str)

    def inspect(self, *, destination: Sequence[str] | None = None,
                timeout: float | None = None) -> Inspector:
        """What workers hold and know: ``hub.control.inspect().active()`` and the like."""
        return Inspector(self, destination, timeout)

    def revoke(self, ids: Sequence[str], *, terminate: bool = False,
               destination: Sequence[str] | None = None,
               timeout: float | None = None) -> list[Reply[dict[str, Any]]]:
        """Revoke task ids through a worker (as ``Hub.revoke`` does, in the result store
        every worker reads); with ``terminate``, running ones are stopped too."""
        return _typed(self.call("revoke", {"ids": list(ids), "terminate": terminate},
                                destination=destination, timeout=timeout), _mapping)

    def shutdown(self, *, destination: Sequence[str] | None = None,
                 timeout: float | None = None) -> list[Reply[str]]:
        """Stop workers gracefully, as SIGTERM does: fetch nothing more, release unstarted
        work, let running tasks finish within the worker's grace."""
        return _typed(self.call("shutdown", destination=destination, timeout=timeout), str)

    def pool_grow(self, n: int = 1, *, queue: str | None = None,
                  destination: Sequence[str] | None = None,
                  timeout: float | None = None) -> list[Reply[dict[str, Any]]]:
        """Add ``n`` slots to the pool of the lane serving ``queue`` (default: the worker's
        only lane). Needs a resizable pool (threads, prefork)."""
        return self._lane_call("pool_grow", {"n": n}, queue, destination, timeout)

    def pool_shrink(self, n: int = 1, *, queue: str | None = None,
                    destination: Sequence[str] | None = None,
                    timeout: float | None = None) -> list[Reply[dict[str, Any]]]:
        """Remove ``n`` slots from the pool of the lane serving ``queue``; at least one
        remains. Running tasks finish."""
        return self._lane_call("pool_shrink", {"n": n}, queue, destination, timeout)

    def autoscale(self, max: int, min: int, *, queue: str | None = None,
                  destination: Sequence[str] | None = None,
                  timeout: float | None = None) -> list[Reply[dict[str, Any]]]:
        """Autoscale the lane serving ``queue`` between ``min`` and ``max`` slots."""
        return self._lane_call("autoscale", {"max": max, "min": min}, queue, destination,
                               timeout)

    def add_queue(self, queue: str, *, lane: str | None = None,
                  destination: Sequence[str] | None = None,
                  timeout: float | None = None) -> list[Reply[dict[str, Any]]]:
        """Start consuming ``queue``, on the lane that serves queue ``lane`` (default: the
        worker's only lane)."""
        arguments: dict[str, Any] = {"queue": queue}
        if lane is not None:
            arguments["lane"] = lane
        return _typed(self.call("add_queue", arguments, destination=destination,
                                timeout=timeout), _mapping)

    def cancel_queue(self, queue: str, *, destination: Sequence[str] | None = None,
                     timeout: float | None = None) -> list[Reply[dict[str, Any]]]:
        """Stop consuming ``queue``; what workers hold from it runs to the end."""
        return _typed(self.call("cancel_queue", {"queue": queue}, destination=destination,
                                timeout=timeout), _mapping)

    def loglevel(self, level: str, *, destination: Sequence[str] | None = None,
                 timeout: float | None = None) -> list[Reply[dict[str, Any]]]:
        """Set workers' log level: debug, info, warning, error or critical."""
        return _typed(self.call("loglevel", {"level": level}, destination=destination,
                                timeout=timeout), _mapping)

    def rate_limit(self, task: str, rate: str | None) -> None:
        """Change ``task``'s rate limit for the whole fleet (``"100/m"``; None: back to the
        task's own ``rate_limit``).

        Unlike the commands above it goes to no worker: the limit is kept in the result
        store, where every worker reads it within about two seconds, so it holds for workers
        that start later too (:meth:`Hub.set_rate_limit`).

        Raises:
            ConfigurationError: ``rate`` is not a rate.
            ResultError: the hub keeps no results, or the store failed.
        """
        self.hub.bridge.run(self.hub.set_rate_limit(task, rate))

    def _lane_call(self, command: str, arguments: dict[str, Any], queue: str | None,
                   destination: Sequence[str] | None,
                   timeout: float | None) -> list[Reply[dict[str, Any]]]:
        if queue is not None:
            arguments["queue"] = queue
        return _typed(self.call(command, arguments, destination=destination, timeout=timeout),
                      _mapping)


class Inspector:
    """Read-only questions to workers; made by :meth:`Control.inspect`."""

    def __init__(self, control: Control, destination: Sequence[str] | None,
                 timeout: float | None) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout

    def _ask(self, command: str) -> list[Reply[Any]]:
        return self.control.call(command, destination=self.destination, timeout=self.timeout)

    def active(self) -> list[Reply[list[TaskSummary]]]:
        """The tasks each worker runs now."""
        return _typed(self._ask("active"), _tasks)

    def reserved(self) -> list[Reply[list[TaskSummary]]]:
        """The tasks each worker holds that have not started (waiting for a slot)."""
        return _typed(self._ask("reserved"), _tasks)

    def scheduled(self) -> list[Reply[list[TaskSummary]]]:
        """Held tasks with a future eta (rare: delayed messages wait in the broker)."""
        return _typed(self._ask("scheduled"), _tasks)

    def registered(self) -> list[Reply[list[str]]]:
        """The task names each worker knows."""
        return _typed(self._ask("registered"), _names)

    def stats(self) -> list[Reply[dict[str, Any]]]:
        """Counters, lanes and pools, uptime, memory and load of each worker."""
        return _typed(self._ask("stats"), _mapping)

    def conf(self) -> list[Reply[dict[str, Any]]]:
        """Each worker's settings, with URLs' secrets masked and signing keys by id only."""
        return _typed(self._ask("conf"), _mapping)
