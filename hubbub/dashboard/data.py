"""What the dashboard reads and does, on its own connections to the hub's broker and store.

Everything here is a client of the public seams (transport, result store, registry, control
plane, schedule store), never of worker internals. Text that came from the broker or the
store is cut and has its secrets masked before it leaves this module for a page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hubbub._client import revoke
from hubbub._redact import redact
from hubbub._text import cap
from hubbub.codecs import json_dumps
from hubbub.control.client import TaskSummary
from hubbub.control.commands import ControlTimeout, Reply
from hubbub.control.registry import Registry, WorkerInfo
from hubbub.control.wire import decode_batch
from hubbub.errors import HubbubError
from hubbub.hub import Hub
from hubbub.results import ResultBackend, ResultRecord, State
from hubbub.results.base import HistoryQuery, HistoryRow
from hubbub.results.history import RETRY_OF, HistoryDetail
from hubbub.schedule.store import Lease, SlotState, open_store
from hubbub.task import SendOptions, TaskOptions, build_envelope
from hubbub.transports import DeadLetter, QueueStats, Transport
from hubbub.transports._dead import task_of

__all__ = ["PREVIEW", "Overview", "Source", "masked"]

log = logging.getLogger("hubbub.dashboard")

PREVIEW = 400  # characters of a body, argument or value shown on a page
WINDOW = 3600.0  # seconds the overview's charts cover
BUCKET = 60.0  # seconds per point of a chart
OVERVIEW_ROWS = 5000  # newest history rows the overview's charts and percentiles are drawn from
CONTROL_WAIT = 2.0  # seconds an action or a worker listing waits for workers' replies


def masked(value: object, limit: int = PREVIEW) -> str:
    """``value`` as text for a page: JSON where it can be, secrets masked, cut to ``limit``."""
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", "replace")
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = json_dumps(value).decode()
        except (TypeError, ValueError):
            text = repr(value)
    return cap(redact(text), limit)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by the nearest rank; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass(frozen=True)
class Overview:
    """The overview's figures: per-minute points over the last hour, and latencies, from
    the newest :data:`OVERVIEW_ROWS` tasks (``sampled`` when the hour held more)."""

    finished: list[int]
    failed: list[int]
    runtime_p50: float | None
    runtime_p95: float | None
    wait_p50: float | None
    wait_p95: float | None
    queues: list[QueueStats]
    workers: list[WorkerInfo]
    sampled: bool


@dataclass
class Source:
    """The dashboard's connections (opened on its own event loop) and what it reads."""

    hub: Hub
    transport: Transport | None = None
    results: ResultBackend | None = None
    depth_log: deque[tuple[float, dict[str, int]]] = field(
        default_factory=lambda: deque(maxlen=120))

    async def open(self) -> None:
        """Connect to the broker and the result store."""
        self.transport = self.hub.open_transport()
        await self.transport.connect()
        self.results = self.hub.open_results()
        if self.results is not None:
            await self.results.connect()

    async def close(self) -> None:
        """Close what :meth:`open` opened."""
        for conn in (self.transport, self.results):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self.transport = self.results = None

    @property
    def _transport(self) -> Transport:
        if self.transport is None:
            raise HubbubError("the dashboard is not connected to its broker")
        return self.transport

    @property
    def _results(self) -> ResultBackend:
        if self.results is None:
            raise HubbubError("this hub keeps no results: the dashboard needs a result store "
                              "for history, workers and revokes (Hub(results=...))")
        return self.results

    # -- reading ---------------------------------------------------------------------------

    async def workers(self) -> list[WorkerInfo]:
        """The live workers of the registry (none without a result store)."""
        if self.results is None:
            return []
        return await Registry(self.results).workers()

    async def running(self) -> dict[str, list[TaskSummary]]:
        """The tasks each live worker runs now (empty when none answers in time)."""
        if not await self.workers():
            return {}
        try:
            replies = await self.hub.control.call_async("active", timeout=CONTROL_WAIT)
        except (ControlTimeout, HubbubError):
            return {}
        out: dict[str, list[TaskSummary]] = {}
        for reply in replies:
            raw = reply.value if isinstance(reply.value, list) else []
            out[reply.worker] = [t for r in raw if (t := TaskSummary.from_json(r))]
        return out

    async def queues(self) -> list[QueueStats]:
        """Every queue's counts, by name; each reading also feeds :meth:`rate`."""
        stats = await self._transport.stats()
        self.depth_log.append((time.time(), {s.queue: s.ready for s in stats}))
        return sorted(stats, key=lambda s: s.queue)

    def rate(self, queue: str) -> float | None:
        """How fast ``queue``'s ready count changed per minute, over the dashboard's own
        readings (None until two readings a few seconds apart exist)."""
        points = [(t, depths[queue]) for t, depths in self.depth_log if queue in depths]
        if len(points) < 2 or points[-1][0] - points[0][0] < 2.0:
            return None
        (t0, d0), (t1, d1) = points[0], points[-1]
        return (d1 - d0) / (t1 - t0) * 60.0

    async def dead_letters(self, queue: str | None = None, limit: int = 200
                           ) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, of ``queue`` or of every queue."""
        return await self._transport.list_dead(queue or None, limit=limit)

    @property
    def history_off(self) -> str:
        """Why no task history is kept, for a page to say so; empty when it is kept."""
        if not self.hub.settings.history:
            return ("task history is off (HUBBUB_HISTORY=off, or Hub(history=False)): "
                    "workers write none, so there is nothing to search")
        if self.results is not None and self.results.history_ttl is None:
            return "this result store keeps no task history (its history_ttl is None)"
        return ""

    async def search(self, query: HistoryQuery) -> list[HistoryRow]:
        """The task history rows matching ``query``, newest first."""
        return await self._results.search_history(query)

    async def task(self, id: str) -> tuple[ResultRecord | None, HistoryRow | None,
                                           HistoryDetail]:
        """Task ``id``'s result record (while kept), history row and what the history
        keeps beside it (while retained)."""
        record = (await self._results.get([id])).get(id)
        rows = await self._results.search_history(HistoryQuery(id=id, limit=1))
        detail = await self._results.history_detail(id)
        return record, rows[0] if rows else None, detail

    async def overview(self) -> Overview:
        """The overview's figures for the last hour."""
        now = time.time()
        rows = await self._results.search_history(HistoryQuery(since=now - WINDOW,
                                                                limit=OVERVIEW_ROWS))
        points = int(WINDOW // BUCKET)
        finished, failed = [0] * points, [0] * points
        runtimes, waits = [], []
        for row in rows:
            if row.finished_at is None or row.state not in (State.SUCCESS, State.FAILURE):
                continue
            slot = int((row.finished_at - (now - WINDOW)) // BUCKET)
            if 0 <= slot < points:
                finished[slot] += 1
                failed[slot] += row.state == State.FAILURE
            if row.runtime is not None:
                runtimes.append(row.runtime)
            if row.wait is not None:
                waits.append(row.wait)
        queues, workers = await asyncio.gather(self.queues(), self.workers())
        return Overview(finished, failed, percentile(runtimes, 0.5),
                        percentile(runtimes, 0.95), percentile(waits, 0.5),
                        percentile(waits, 0.95), queues, workers, len(rows) >= OVERVIEW_ROWS)

    async def schedules(self) -> tuple[dict[str, SlotState], Lease | None, str]:
        """The last slot of each entry, the leading beat, and a note when unreadable."""
        try:
            store = open_store(self.hub.settings.results)
            await store.connect()
        except HubbubError as exc:
            return {}, None, redact(str(exc))
        try:
            return await store.last_slots(), await store.leader(), ""
        finally:
            await store.close()

    @contextlib.asynccontextmanager
    async def events(self) -> AsyncIterator[Callable[[float], Awaitable[int]]]:
        """A waiter on the plane's ``events`` channel (when workers publish events):
        ``await wait(seconds)`` returns how many events came, at once when some do, else
        0 after ``seconds``. Where the broker carries no plane, it only waits."""
        plane = None
        subscription = None
        try:
            plane = self.hub.open_plane()
            await plane.connect()
            subscription = await plane.subscribe("events")
        except HubbubError as exc:
            log.debug("live updates without events: %s", redact(str(exc)))

        async def wait(seconds: float) -> int:
            if subscription is None:
                await asyncio.sleep(seconds)
                return 0
            try:
                return sum(len(decode_batch(body)) for body in await subscription.read(seconds))
            except HubbubError:
                await asyncio.sleep(seconds)  # the broker is away: look again later
                return 0

        try:
            yield wait
        finally:
            for closing in (subscription, plane):
                if closing is not None:
                    with contextlib.suppress(Exception):
                        await closing.close()

    async def digest(self) -> tuple[Any, ...]:
        """A value that changes when anything a page shows changed (for live updates)."""
        newest = await self._results.search_history(HistoryQuery(limit=1)) \
            if self.results is not None else []
        stats = await self._transport.stats()
        workers = await self.workers()
        return (tuple((r.id, r.state, r.updated_at) for r in newest),
                tuple(stats), tuple((w.name, w.processed, w.running) for w in workers))

    # -- acting ----------------------------------------------------------------------------

    async def revoke(self, id: str, *, terminate: bool) -> str:
        """Revoke task ``id`` in the store (with ``terminate``, also stop it where it runs);
        a one-line account."""
        stored = await revoke(self._results, [id], terminate=terminate,
                              ttl=self.hub.settings.result_ttl)
        if terminate:  # the store stops it from starting; the workers stop a running one
            with contextlib.suppress(ControlTimeout):
                await self.hub.control.call_async("revoke", {"ids": [id], "terminate": True},
                                                  timeout=CONTROL_WAIT)
        if stored:
            return f"task {id} {'terminated' if terminate else 'revoked'}"
        return f"task {id} had already {'finished' if terminate else 'started or finished'}"

    async def retry(self, id: str) -> str:
        """Run a task again: from its dead letter when there is one (the same message),
        else, for a task that ended in FAILURE or REVOKED, as a new task (a new id) with
        the same name, arguments and queue, taken from its history. The two are linked
        both ways in the history; a one-line account."""
        if await self._transport.requeue_dead([id]):
            return f"task {id} requeued from the dead letters"
        record, row, detail = await self.task(id)
        found = record or row
        if found is None:
            return f"task {id} cannot be retried: no record or history of it is kept"
        if found.state not in (State.FAILURE, State.REVOKED):
            return (f"task {id} cannot be retried: it is {found.state.value}; only a task "
                    "that ended in FAILURE or REVOKED is sent again")
        name = found.task or (row.task if row is not None else None)
        arguments = None if detail.note is None else detail.note.arguments()
        if detail.note is None or arguments is None or name is None:
            return (f"task {id} cannot be retried here: its history keeps no exact copy of "
                    "its arguments (none kept, or cut or masked because they are large or "
                    "look secret); send the task again from code")
        args, kwargs = arguments
        known = self.hub.tasks.get(name)
        spec = known.spec if known is not None else TaskOptions(name=name)
        envelope = build_envelope(spec, self.hub.settings.default_queue, args, kwargs,
                                  SendOptions(queue=detail.note.queue,
                                              headers={RETRY_OF: id}))
        [result] = await self.hub.send_async([envelope])
        await self._results.link_retry(id, result.id)
        return f"task {id} sent again as task {result.id}"

    async def purge(self, queue: str) -> str:
        """Delete ``queue``'s ready messages; a one-line account."""
        return f"purged {await self._transport.purge(queue)} message(s) from {queue}"

    async def requeue(self, ids: Sequence[str]) -> str:
        """Put the dead letters ``ids`` back on their queues; a one-line account."""
        return f"requeued {await self._transport.requeue_dead(list(ids))} dead letter(s)"

    async def delete_dead(self, ids: Sequence[str]) -> str:
        """Delete the dead letters ``ids``; a one-line account."""
        return f"deleted {await self._transport.delete_dead(list(ids))} dead letter(s)"

    async def control(self, worker: str, command: str, arguments: dict[str, Any]) -> str:
        """Send ``command`` to ``worker``; a one-line account of its reply."""
        try:
            replies: list[Reply[Any]] = await self.hub.control.call_async(
                command, arguments, destination=[worker], timeout=CONTROL_WAIT)
        except ControlTimeout as exc:
            return redact(str(exc))
        texts = [f"{r.worker}: {'ok' if r.ok else 'refused'} "
                 f"{masked(r.value if r.ok else r.error, 200)}" for r in replies]
        return f"{command} — " + "; ".join(texts)


def dead_task(letter: DeadLetter) -> str:
    """The task a dead letter's body names, or ``?``."""
    return task_of(letter.body) or "?"
