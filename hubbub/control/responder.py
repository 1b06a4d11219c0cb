"""``Responder``: the worker's side of remote control, a background task of ``WorkerLoop``.

It subscribes to the plane's ``control`` channel, acts on every command addressed to its
worker (or broadcast) and publishes one :class:`~hubbub.control.commands.Reply` per command
on ``replies``. When nobody sends, it costs one blocking read of the plane at a time.

A command can never hurt the worker: whatever it holds, the worst outcome is an error reply
(or, for data that is not a command or is not signed when the hub signs, a log line and
nothing else). Each command runs with a time bound, one after the other, on the worker's
loop, so it sees the worker between two steps of its own and needs no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import reprlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from hubbub._redact import redact
from hubbub._text import clean_text
from hubbub._version import __version__
from hubbub.control.commands import (
    CONTROL,
    REPLIES,
    Refused,
    Reply,
    decode_command,
    encode_reply,
)
from hubbub.control.plane import Plane, Subscription
from hubbub.control.registry import load_average, rss_mib
from hubbub.errors import HubbubError
from hubbub.settings import Limits, Settings

if TYPE_CHECKING:
    from hubbub.worker.held import Held
    from hubbub.worker.lane import Lane
    from hubbub.worker.loop import WorkerLoop

__all__ = ["Responder", "task_summary"]

CLOSE_WITHIN = 3.0  # seconds closing the subscription, then the plane, may take at a stop

log = logging.getLogger("hubbub.control")

READ_WAIT = 1.0  # seconds one read of the plane blocks when nothing comes
HANDLE_WITHIN = 10.0  # seconds a command may take before it is answered with an error
ANSWER_WITHIN = 1.0  # seconds a resize may take before the answer says it is under way
RETRY = (0.5, 10.0)  # backoff (first, most) after the plane failed
REMEMBERED = 100  # refusal reasons logged once each; past this many, all at debug
LEVELS = ("debug", "info", "warning", "error", "critical")
MAX_QUEUE = 200  # characters of a queue name add_queue accepts
# Questions (a dashboard may ask every second) are logged at debug; commands that steer at info.
QUESTIONS = frozenset({"ping", "active", "reserved", "scheduled", "registered", "stats", "conf"})

_preview = reprlib.Repr()
_preview.maxstring = _preview.maxother = 60
_preview.maxlist = _preview.maxtuple = _preview.maxdict = _preview.maxset = 8
PREVIEW = 200  # characters of a task's arguments shown by inspect


class Handled:
    """A handler's value, plus what to do once its reply is out (e.g. stop the worker)."""

    def __init__(self, value: Any, then: Callable[[], None]) -> None:
        self.value = value
        self.then = then


Handler = Callable[["Responder", dict[str, Any]], Awaitable[Any]]


class Responder:
    """Answers control commands for ``worker`` over ``plane``.

    Args:
        worker: the running worker it inspects and steers.
        plane: an unconnected plane of the worker's hub (the responder connects and closes
            it).
    """

    def __init__(self, worker: WorkerLoop, plane: Plane) -> None:
        self.worker = worker
        self.plane = plane
        self.started_at = time.time()
        self.handled = 0  # commands answered (for tests and stats)
        self._subscription: Subscription | None = None
        self._refusals: set[str] = set()
        self._under_way: set[asyncio.Future[None]] = set()  # resizes answered before done

    async def finish_soon(self, work: Awaitable[None], what: str) -> bool:
        """Run ``work`` to its end even if this command's answer goes out first: wait up to
        ``ANSWER_WITHIN`` seconds for it (its errors then are the command's), else let it
        finish beside the worker (a prefork pool starts its children one by one) and log
        how it ended. True when it finished in time."""
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait([task], timeout=ANSWER_WITHIN)
        if done:
            task.result()
            return True
        self._under_way.add(task)
        task.add_done_callback(lambda t: self._finished(t, what))
        return False

    def _finished(self, task: asyncio.Future[None], what: str) -> None:
        self._under_way.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("remote control: %s failed: %r", what, task.exception())

    async def open(self) -> None:
        """Connect and subscribe, so that commands sent from now on are seen.

        Raises:
            HubbubError: the plane cannot be reached (as it raised it).
        """
        if self._subscription is None:
            await self.plane.connect()
            self._subscription = await self.plane.subscribe(CONTROL)

    async def serve_forever(self) -> None:
        """Read and answer commands until cancelled; a broken plane is retried with backoff."""
        delay = RETRY[0]
        try:
            while True:
                try:
                    await self.open()
                    assert self._subscription is not None
                    messages = await self._subscription.read(READ_WAIT)
                    delay = RETRY[0]
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the broker is down: look again later
                    log.warning("remote control: reading commands failed (%s); retrying in "
                                "%.1fs", redact(str(exc)), delay)
                    await self._drop_subscription()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY[1])
                    continue
                for data in messages:
                    await self.handle(data)
        finally:
            # Bounded: the worker waits for this task when it stops, and a plane that does
            # not answer must not hold the stop (nor leave this coroutine unfinished).
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(self._drop_subscription(), CLOSE_WITHIN)
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(self.plane.close(), CLOSE_WITHIN)

    async def _drop_subscription(self) -> None:
        sub, self._subscription = self._subscription, None
        if sub is not None:
            try:
                await sub.close()
            except Exception as exc:  # closing a broken subscription may fail too
                log.debug("remote control: closing the subscription failed (%r)", exc)

    async def handle(self, data: bytes) -> None:
        """Act on one message of the ``control`` channel; never raises (but cancellation)."""
        command = decode_command(data, self.worker.hub.signer)
        if isinstance(command, Refused):
            self._refused(command.reason)
            return
        if not command.addressed_to(self.worker.name):
            return
        if command.reply_to != REPLIES:
            self._refused(f"control command {command.command!r} asks for replies on "
                          f"{command.reply_to!r}; only {REPLIES!r} is answered")
            return
        value: Any = None
        error: str | None = None
        handler = HANDLERS.get(command.command)
        if handler is None:
            error = (f"unknown command {command.command!r}; this worker knows: "
                     f"{', '.join(sorted(HANDLERS))}")
        else:
            try:
                value = await asyncio.wait_for(handler(self, command.arguments), HANDLE_WITHIN)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                error = f"{command.command} took more than {HANDLE_WITHIN:.0f}s; gave up"
            except (HubbubError, ValueError, TypeError) as exc:
                error = redact(str(exc))  # a store's error may name its URL
            except Exception as exc:  # a bug: answer, log, and keep serving
                log.exception("remote control: %s failed", command.command)  # a known name
                error = f"{command.command} failed inside the worker: {exc!r}"
        then = None
        if isinstance(value, Handled):
            value, then = value.value, value.then
        # The name and the sender are anyone's text (without signing): shown as repr, cut.
        log.log(logging.DEBUG if command.command in QUESTIONS else logging.INFO,
                "remote control: %s from %r: %s",
                command.command if command.command in HANDLERS else repr(command.command[:60]),
                command.sender[:100], "done" if error is None else f"error: {error!r}")
        reply: Reply[Any] = Reply(self.worker.name, value, error, command.id)
        try:
            await self.plane.publish(REPLIES, [encode_reply(reply, self.worker.hub.signer)])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the sender times out and says so
            log.warning("remote control: the reply to %s could not be sent (%s)",
                        command.command, redact(str(exc)))
        self.handled += 1
        if then is not None:
            then()

    def _refused(self, reason: str) -> None:
        if reason in self._refusals or len(self._refusals) >= REMEMBERED:
            log.debug("remote control: ignored: %s", reason)
            return
        self._refusals.add(reason)
        log.warning("remote control: ignored: %s (logged once)", reason)

    # -- helpers for handlers ----------------------------------------------------------------

    def lane(self, arguments: dict[str, Any], key: str = "queue") -> Lane:
        """The lane named by ``arguments[key]`` (any queue it serves), or the only lane.

        Raises:
            ValueError: no lane serves that queue, or the worker has several lanes and
                none was named.
        """
        queue = arguments.get(key)
        lanes = self.worker.lanes
        if queue is None:
            if len(lanes) == 1:
                return lanes[0]
            raise ValueError(f"this worker has {len(lanes)} lanes ({_lanes(lanes)}); name one "
                             f"with --{key}, any queue of that lane")
        for lane in lanes:
            if queue in lane.queues:
                return lane
        raise ValueError(f"no lane of this worker serves queue {queue!r}; its lanes: "
                         f"{_lanes(lanes)}")


def _lanes(lanes: list[Lane]) -> str:
    return "; ".join(",".join(lane.queues) or "(no queues)" for lane in lanes)


def _whole(arguments: dict[str, Any], name: str, least: int = 1) -> int:
    value = arguments.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a whole number of at least {least}, not {value!r}")
    return value


def task_summary(held: Held) -> dict[str, Any]:
    """What inspect shows of one held task: id, name, an argument preview, lane, times."""
    env = held.envelope
    parts = [_preview.repr(a) for a in env.args]
    parts += [f"{k}={_preview.repr(v)}" for k, v in list(env.kwargs.items())[:8]]
    args = ", ".join(parts)
    if len(args) > PREVIEW:
        args = args[:PREVIEW] + "…"
    return {"id": env.id, "name": env.task, "args": args, "queue": env.queue,
            "lane": ",".join(held.lane.queues), "started_at": held.started_at,
            "eta": env.eta, "attempts": held.delivery.attempts}


# -- the commands ------------------------------------------------------------------------------


async def _ping(r: Responder, arguments: dict[str, Any]) -> Any:
    return "pong"


async def _active(r: Responder, arguments: dict[str, Any]) -> Any:
    return [task_summary(h) for h in r.worker.holding() if h.started_at is not None]


async def _reserved(r: Responder, arguments: dict[str, Any]) -> Any:
    return [task_summary(h) for h in r.worker.holding() if h.started_at is None]


async def _scheduled(r: Responder, arguments: dict[str, Any]) -> Any:
    # Delayed messages live in the broker, so a worker holds one only for a moment.
    now = time.time()
    return [task_summary(h) for h in r.worker.holding()
            if h.envelope.eta is not None and h.envelope.eta > now]


async def _registered(r: Responder, arguments: dict[str, Any]) -> Any:
    return sorted(r.worker.hub.tasks)


async def _stats(r: Responder, arguments: dict[str, Any]) -> Any:
    w = r.worker
    held = w.holding()
    return {
        "name": w.name, "pid": os.getpid(), "version": __version__,
        "uptime": round(time.time() - r.started_at, 1), "processed": w.processed,
        "failed": w.failed, "running": w.running, "held": len(held),
        "rss_mib": rss_mib(), "load": load_average(), "commands": r.handled,
        "lanes": [{"queues": list(lane.queues), "pool": lane.pool.kind,
                   "concurrency": lane.pool.concurrency, "running": lane.running,
                   "held": lane.held, "prefetch": lane.prefetch,
                   "autoscale": None if lane.autoscale is None else list(lane.autoscale)}
                  for lane in w.lanes],
    }


async def _conf(r: Responder, arguments: dict[str, Any]) -> Any:
    return {**settings_shown(r.worker.hub.settings),
            "worker.name": r.worker.name, "worker.grace": r.worker.grace,
            "worker.lease": r.worker.lease, "worker.heartbeat": r.worker.heartbeat}


def settings_shown(settings: Settings) -> dict[str, Any]:
    """Every setting as JSON values, secrets masked: URLs redacted, signing keys by id."""
    shown: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name == "sources":
            continue
        value = getattr(settings, f.name)
        if f.name == "signing_keys":
            value = [kid for kid, _ in value]  # never a secret
        elif f.name == "limits":
            for lf in fields(Limits):
                shown[f"limits.{lf.name}"] = getattr(value, lf.name)
            continue
        elif isinstance(value, frozenset):
            value = sorted(value)
        elif isinstance(value, str):
            value = redact(value)
        shown[f.name] = value
    return shown


async def _revoke(r: Responder, arguments: dict[str, Any]) -> Any:
    ids = arguments.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ValueError("revoke needs ids: a non-empty list of task ids")
    terminate = arguments.get("terminate", False)
    if not isinstance(terminate, bool):
        raise ValueError(f"terminate must be true or false, not {terminate!r}")
    took = await r.worker.revoke(ids, terminate=terminate)
    return {"revoked": took, "terminate": terminate}


async def _shutdown(r: Responder, arguments: dict[str, Any]) -> Any:
    w = r.worker

    def stop() -> None:
        log.warning("remote control: shutdown: stopping gracefully (as on SIGTERM)")
        w.stop()

    return Handled("stopping gracefully", stop)


async def _resize(r: Responder, arguments: dict[str, Any], sign: int) -> Any:
    n = _whole(arguments, "n")
    lane = r.lane(arguments)
    if not lane.pool.resizable:
        raise ValueError(f"the {lane.pool.kind} pool of lane {','.join(lane.queues)} cannot "
                         "resize; pool grow/shrink needs a resizable pool (threads or prefork)")
    old = lane.pool.concurrency
    new = old + sign * n
    if new < 1:
        raise ValueError(f"lane {','.join(lane.queues)} has {old} slots; it cannot shrink by "
                         f"{n} (at least 1 remains)")
    done = await r.finish_soon(lane.resize(new, "remote control"),
                               f"resizing lane {','.join(lane.queues)} to {new}")
    return {"lane": ",".join(lane.queues), "was": old, "concurrency": new,
            **({} if done else {"under_way": True})}


async def _grow(r: Responder, arguments: dict[str, Any]) -> Any:
    return await _resize(r, arguments, +1)


async def _shrink(r: Responder, arguments: dict[str, Any]) -> Any:
    return await _resize(r, arguments, -1)


async def _autoscale(r: Responder, arguments: dict[str, Any]) -> Any:
    high, low = _whole(arguments, "max"), _whole(arguments, "min")
    if low > high:
        raise ValueError(f"autoscale needs MIN <= MAX, got max {high}, min {low}")
    lane = r.lane(arguments)
    if not lane.pool.resizable:
        raise ValueError(f"the {lane.pool.kind} pool of lane {','.join(lane.queues)} cannot "
                         "resize, so it cannot autoscale (threads or prefork can)")
    was = lane.autoscale
    done = await r.finish_soon(lane.set_autoscale((low, high)),
                               f"autoscale {low}..{high} of lane {','.join(lane.queues)}")
    return {"lane": ",".join(lane.queues), "was": None if was is None else list(was),
            "autoscale": [low, high], "concurrency": min(high, max(low, lane.pool.concurrency)),
            **({} if done else {"under_way": True})}


async def _add_queue(r: Responder, arguments: dict[str, Any]) -> Any:
    queue = _queue_name(arguments.get("queue"))
    if queue in r.worker.queues:
        raise ValueError(f"this worker consumes {queue!r} already")
    lane = r.lane(arguments, "lane")
    r.worker.add_queue(queue, lane)
    return {"queue": queue, "lane": ",".join(lane.queues)}


def _queue_name(value: Any) -> str:
    """A queue name fit for every broker: text, printable, at most ``MAX_QUEUE`` long."""
    import unicodedata  # here: an idle worker never loads its tables (issue #18)

    if not isinstance(value, str) or not value.strip():
        raise ValueError("add_queue needs a queue name")
    name = value.strip()
    if (len(name) > MAX_QUEUE or clean_text(name) != name
            or any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in name)):
        raise ValueError(f"queue name {name[:MAX_QUEUE]!r} is not usable: at most "
                         f"{MAX_QUEUE} printable characters")
    return name


async def _cancel_queue(r: Responder, arguments: dict[str, Any]) -> Any:
    queue = arguments.get("queue")
    if not isinstance(queue, str) or not queue:
        raise ValueError("cancel_queue needs a queue name")
    r.worker.cancel_queue(queue)
    return {"queue": queue, "queues": list(r.worker.queues)}


async def _loglevel(r: Responder, arguments: dict[str, Any]) -> Any:
    level = arguments.get("level")
    if not isinstance(level, str) or level.lower() not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    root = logging.getLogger()
    was = logging.getLevelName(root.level).lower()
    root.setLevel(level.upper())
    log.warning("remote control: log level %s -> %s", was, level.lower())
    return {"level": level.lower(), "was": was}


HANDLERS: dict[str, Handler] = {
    "ping": _ping, "active": _active, "reserved": _reserved, "scheduled": _scheduled,
    "registered": _registered, "stats": _stats, "conf": _conf, "revoke": _revoke,
    "shutdown": _shutdown, "pool_grow": _grow, "pool_shrink": _shrink,
    "autoscale": _autoscale, "add_queue": _add_queue, "cancel_queue": _cancel_queue,
    "loglevel": _loglevel,
}
