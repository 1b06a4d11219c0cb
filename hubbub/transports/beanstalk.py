"""Beanstalkd: ``beanstalk://host:11300/?prefix=hubbub&ttr=5`` (see docs/beanstalk.md).

Tubes ``<prefix>.<queue>`` with native priorities, delays and ``bury``, over the small
asyncio protocol client in ``_beanstalk_wire`` (not greenstalk on threads).
``touch``/``delete``/``release``/``bury`` only work on the reserving connection, so the
*jobs* connection owns every lease and never blocks (``reserve-with-timeout 0``); a waiting
fetch blocks on *waiter* in 1 s slices and releases what it gets for *jobs* to take. TTR is
fixed at ``put``, so jobs are put with TTR ``ttr`` and touched until their hubbub lease runs
out. Attempts are ``reserves - releases``. Dead letters are buried jobs plus reason records
in the tube ``<prefix>$dead``; a requeue puts the job again so its count starts over.

Tube names, job framing and batched puts are in ``_beanstalk_jobs``; the dead letters'
records, their retention and reading in ``_beanstalk_dead``; this module holds the leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl, urlsplit

from hubbub._suggest import did_you_mean
from hubbub._text import clean_text
from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.errors import ConfigurationError, MessageRejectedByBroker
from hubbub.transports._beanstalk_dead import DeadLetters
from hubbub.transports._beanstalk_jobs import (
    MAGIC,
    PRIORITY_BASE,
    Job,
    Tubes,
    delay_seconds,
    pri,
    put,
    unframe,
)
from hubbub.transports._beanstalk_wire import Connection, Connections, Reply, expect, parse_yaml
from hubbub.transports._dead import OPTIONS as DEAD_OPTIONS
from hubbub.transports._dead import DeadFilter, retention_of
from hubbub.transports._safe import check_queue
from hubbub.transports.base import (
    Capabilities,
    DeadLetter,
    DeadLetterRequest,
    Delivery,
    Outgoing,
    QueueStats,
    Transport,
)

DEFAULT_PORT = 11300
# of the URL's query
OPTIONS = ("prefix", "ttr", "connect_timeout", "publish_timeout", *DEAD_OPTIONS)


@dataclasses.dataclass(slots=True)
class _Lease:
    conn: Connection
    lease_until: float
    touched_at: float


class BeanstalkTransport(Transport):
    """Tubes as queues, TTR as the lease, bury as the dead-letter store.

    Args:
        url: ``beanstalk://host:port/`` with optional query ``prefix`` (tube namespace,
            letters, digits, ``_`` and ``-``; default ``hubbub``), ``ttr`` (whole seconds a
            job stays reserved between renewals; default 5), ``connect_timeout``
            (seconds; default 5) and ``publish_timeout`` (seconds a publish may wait for the
            server's answers; default 30); ``dead_ttl`` and ``dead_max`` override the
            keywords below.
        clock: the source of wall time for ETAs and leases.
        dead_ttl: seconds a dead letter is kept (default 7 days).
        dead_max: dead letters (buried jobs) kept per queue, oldest dropped first (default
            10,000).

    Raises:
        ConfigurationError: the URL is malformed or has an unknown option (with the closest
            known one as a suggestion).
    """

    capabilities: Capabilities = Capabilities(max_message_size=65_535)

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK, dead_ttl: float | None = None,
                 dead_max: int | None = None) -> None:
        url, self.retention = retention_of(url, dead_ttl, dead_max)
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            self.host = parts.hostname or "127.0.0.1"
            self.port = parts.port or DEFAULT_PORT
            self.ttr = max(1, math.ceil(float(query.pop("ttr", "5"))))
            self.connect_timeout = float(query.pop("connect_timeout", "5"))
            self.publish_timeout = float(query.pop("publish_timeout", "30"))
        except ValueError as exc:
            raise ConfigurationError(f"bad beanstalk URL {self._safe(url)!r}: {exc}") from exc
        self.prefix = query.pop("prefix", "hubbub")
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}", self.prefix):
            raise ConfigurationError(
                f"beanstalk prefix {self.prefix!r} must be letters, digits, '_' or '-'"
            )
        if query:  # the parsing above popped every known option
            key = min(query)
            tip = did_you_mean(key, OPTIONS) or f" (known: {', '.join(OPTIONS)})"
            raise ConfigurationError(f"unknown beanstalk URL option {key!r}{tip}")
        self.url = self._safe(url)
        self.clock = clock
        self._conns = Connections(self.host, self.port, self.connect_timeout,
                                  self.publish_timeout)
        self._tubes = Tubes(self.prefix)
        self._dead = DeadLetters(self._conns, self._tubes, self.retention, clock, self.ttr)
        self._held: dict[int, _Lease] = {}
        self._waiting: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None

    @staticmethod
    def _safe(url: str) -> str:
        return re.sub(r"//[^/@]*@", "//", url)  # beanstalkd has no users; drop any userinfo

    def __repr__(self) -> str:
        return f"BeanstalkTransport({self.url!r})"

    @property
    def max_job_size(self) -> int:
        """The server's job-size cap (its ``-z``), framing included; read on connect."""
        return self.capabilities.max_message_size or 65_535

    @property
    def _dead_tube(self) -> str:
        """The tube of the dead-letter records (tests read it with another client)."""
        return self._tubes.dead

    # -- connections ---------------------------------------------------------------------

    async def connect(self) -> None:
        with self._conns.guard():
            conn = await self._conns.open("put")
            [reply] = await conn.call(b"stats\r\n")
            expect(reply, "OK")
            size = int(parse_yaml(reply[1]).get("max-job-size", self.max_job_size))
            self.capabilities = dataclasses.replace(self.capabilities, max_message_size=size)

    async def close(self) -> None:
        for task in (self._keepalive, self._waiting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._keepalive = self._waiting = None
        self._held.clear()
        await self._conns.close()

    # -- publishing ----------------------------------------------------------------------

    def _frame(self, item: Outgoing) -> bytes:
        ident = clean_text(item.id).encode()
        if b"\n" in ident or b" " in ident:
            raise MessageRejectedByBroker(item.id, item.queue,
                                          "a beanstalkd message id may not hold spaces or newlines")
        job = MAGIC + ident + b"\n" + item.body
        if len(job) > self.max_job_size:
            raise MessageRejectedByBroker(
                item.id, item.queue,
                f"{len(job)} bytes with framing; {self._conns.where} takes jobs up to"
                f" {self.max_job_size} bytes (its -z option): send large payloads by reference"
            )
        return job

    def _checked(self, item: Outgoing) -> Job:
        check_queue(item)
        try:
            tube = self._tubes.tube(item.queue)
        except ConfigurationError as exc:
            raise MessageRejectedByBroker(item.id, item.queue, str(exc)) from None
        return tube, item.priority, item.eta, self._frame(item)

    async def publish(self, items: Sequence[Outgoing]) -> None:
        jobs = [self._checked(i) for i in items]  # all checked before any is sent
        await put(self._conns, self._tubes, jobs, now=self.clock.time(), ttr=self.ttr)

    # -- leasing -------------------------------------------------------------------------

    async def fetch(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        tubes = [self._tubes.tube(q) for q in dict.fromkeys(queues)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        with self._conns.guard():
            while True:
                got = await self._reserve(tubes, limit, lease)
                remaining = deadline - loop.time()
                if got or remaining <= 0 or not tubes:
                    return got
                if self._waiting is None or self._waiting.done():
                    waiter = await self._conns.open("waiter")
                    self._waiting = loop.create_task(self._wait_ready(waiter, tubes))
                await asyncio.wait({self._waiting}, timeout=remaining)

    async def _wait_ready(self, waiter: Connection, tubes: Sequence[str]) -> None:
        """Block (1 s at most) until a job is ready in ``tubes``; put it straight back."""
        try:
            *_, (words, _) = await waiter.call(*waiter.watch(tubes), b"reserve-with-timeout 1\r\n")
            if words[0] == "RESERVED":
                [(_, stats)] = await waiter.call(b"stats-job %s\r\n" % words[1].encode())
                level = parse_yaml(stats).get("pri", str(PRIORITY_BASE))
                await waiter.call(b"release %s %s 0\r\n" % (words[1].encode(), level.encode()))
        except ConnectionError:
            return  # the jobs connection reports an outage on the next reserve

    async def _reserve(self, tubes: Sequence[str], limit: int, lease: float) -> list[Delivery]:
        if not tubes or limit <= 0:
            return []
        jobs = await self._conns.open("jobs")
        replies = await jobs.call(*jobs.watch(tubes), *[b"reserve-with-timeout 0\r\n"] * limit)
        reserved = [(w[1], d or b"") for w, d in replies if w[0] == "RESERVED"]
        if not reserved:
            return []
        stats = await jobs.call(*[b"stats-job %s\r\n" % jid.encode() for jid, _ in reserved])
        now = self.clock.time()
        out = []
        for (jid, job), reply in zip(reserved, stats, strict=True):
            expect(reply, "OK")
            info = parse_yaml(reply[1])
            ident, body = unframe(job, jid)
            attempts = int(info.get("reserves", "1")) - int(info.get("releases", "0"))
            priority = min(max(PRIORITY_BASE - int(info.get("pri", PRIORITY_BASE)), 0), 9)
            queue = self._tubes.queue(info.get("tube", "")) or info.get("tube", "")
            out.append(Delivery(queue, body, ident, max(1, attempts), priority,
                                receipt=(jobs, int(jid)), lease_until=now + lease))
            self._held[int(jid)] = _Lease(jobs, now + lease, now)
        if self._keepalive is None or self._keepalive.done():
            self._keepalive = asyncio.get_running_loop().create_task(self._keep_alive())
        return out

    async def _keep_alive(self) -> None:
        """Touch leased jobs every ttr/2 seconds until their hubbub lease runs out.

        beanstalkd 1.12 enforces the TTR of a job taken with ``reserve-with-timeout`` only
        when its connection next sends a command after the deadline; so once a lease has
        run out unrenewed, this nudges the connection just after the job's deadline.
        """
        while self._held:
            now = self.clock.time()
            due, nudge, wake = [], False, now + self.ttr / 2
            for jid, held in list(self._held.items()):
                if held.conn.closed:
                    del self._held[jid]
                elif held.lease_until > now:
                    renew_at = held.touched_at + self.ttr / 2
                    if renew_at <= now:
                        due.append(jid)
                    wake = min(wake, renew_at, held.lease_until)
                elif held.touched_at + self.ttr < now:
                    del self._held[jid]  # past its deadline: beanstalkd may take it back
                    nudge = True
                else:
                    wake = min(wake, held.touched_at + self.ttr + 0.05)
            jobs = self._conns.get("jobs")
            try:
                if due:
                    await self._touch(due)
                if nudge and jobs is not None and not jobs.closed:
                    await jobs.call(b"list-tube-used\r\n")
            except ConnectionError:
                continue  # the dead connection's jobs are dropped on the next pass
            await asyncio.sleep(max(0.01, wake - self.clock.time()))

    async def _touch(self, jids: Sequence[int]) -> list[int]:
        """Touch the jobs on the connection holding them; returns the ids not ours any more."""
        lost: list[int] = []
        conn = self._conns.get("jobs")
        mine = [j for j in jids if conn is not None and self._owned(j, conn)]
        lost += [j for j in jids if j not in mine]
        if mine and conn is not None:
            now = self.clock.time()
            for jid, (words, _) in zip(mine, await conn.call(
                    *[b"touch %d\r\n" % j for j in mine]), strict=True):
                held = self._held.get(jid)
                if words[0] == "TOUCHED" and held is not None:
                    held.touched_at = now
                else:
                    lost.append(jid)
                    self._held.pop(jid, None)
        return lost

    def _owned(self, jid: int, conn: Connection) -> bool:
        held = self._held.get(jid)
        return held is not None and held.conn is conn and not conn.closed

    async def _on_jobs(self, deliveries: Sequence[Delivery],
                       command: Callable[[Delivery], bytes]) -> tuple[list[Delivery], list[Reply]]:
        """Send ``command(d)`` for each delivery still leased on the jobs connection."""
        conn = self._conns.get("jobs")
        live = [d for d in deliveries if conn is not None and not conn.closed
                and d.receipt[0] is conn]
        for d in deliveries:
            self._held.pop(d.receipt[1], None)
        if conn is None or not live:
            return [], []
        with self._conns.guard():
            return live, await conn.call(*map(command, live))

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        _, replies = await self._on_jobs(deliveries, lambda d: b"delete %d\r\n" % d.receipt[1])
        for reply in replies:
            expect(reply, "DELETED", "NOT_FOUND")

    async def release(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        seconds = delay_seconds(delay)
        _, replies = await self._on_jobs(
            deliveries,
            lambda d: b"release %d %d %d\r\n" % (d.receipt[1], pri(d.priority), seconds),
        )
        for reply in replies:
            expect(reply, "RELEASED", "NOT_FOUND")

    async def dead_letter(self, requests: Sequence[DeadLetterRequest]) -> None:
        live, replies = await self._on_jobs(
            [r.delivery for r in requests],
            lambda d: b"bury %d %d\r\n" % (d.receipt[1], pri(d.priority)),
        )
        now = self.clock.time()
        reasons = {id(r.delivery): r.reason for r in requests}
        buried = [(d, reasons[id(d)]) for d, reply in zip(live, replies, strict=True)
                  if expect(reply, "BURIED", "NOT_FOUND")[0] == "BURIED"]
        await self._dead.record(buried, now)
        if live:
            with self._conns.guard():
                await self._dead.prune(sorted({d.queue for d in live}), now)

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        with self._conns.guard():
            lost = set(await self._touch([d.receipt[1] for d in deliveries]))
        until = self.clock.time() + lease
        for d in deliveries:
            held = self._held.get(d.receipt[1])
            if d.receipt[1] not in lost and held is not None:
                held.lease_until = d.lease_until = until
        return [d for d in deliveries if d.receipt[1] in lost]

    # -- inspection ----------------------------------------------------------------------

    async def purge(self, queue: str) -> int:
        tube, count = self._tubes.tube(queue), 0
        with self._conns.guard():
            conn = await self._conns.open("put")
            for peek in (b"peek-ready\r\n", b"peek-delayed\r\n"):
                while True:
                    *_, (words, _) = await conn.call(*conn.use(tube), peek)
                    if words[0] != "FOUND":
                        break
                    [(done, _)] = await conn.call(b"delete %s\r\n" % words[1].encode())
                    count += done[0] == "DELETED"
        return count

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        with self._conns.guard():
            conn = await self._conns.open("put")
            if queues is None:
                [(_, data)] = await conn.call(b"list-tubes\r\n")
                names = [line[2:] for line in (data or b"").decode().splitlines()
                         if line.startswith("- ")]
                queues = sorted(q for q in map(self._tubes.queue, names) if q is not None)
            if not queues:
                return []
            replies = await conn.call(*[b"stats-tube %s\r\n" % self._tubes.tube(q).encode()
                                        for q in queues])
        out = []
        for queue, (words, data) in zip(queues, replies, strict=True):
            s = parse_yaml(data) if words[0] == "OK" else {}
            out.append(QueueStats(queue, int(s.get("current-jobs-ready", 0)),
                                  int(s.get("current-jobs-delayed", 0)),
                                  int(s.get("current-jobs-reserved", 0)),
                                  int(s.get("current-jobs-buried", 0))))
        return out

    async def list_dead(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        return await self._dead.read(queue, limit)

    async def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        return await self._dead.requeue(ids)

    async def delete_dead(self, ids: Sequence[str]) -> int:
        wanted = {clean_text(i) for i in ids}
        if not wanted:
            return 0
        return await self._dead.remove(lambda r: r["id"] in wanted, lambda _body: True)

    async def purge_dead(self, *, older_than: float | None = None, task: str | None = None,
                         queue: str | None = None) -> int:
        match, now = DeadFilter(older_than, task, queue), self.clock.time()
        return await self._dead.remove(
            lambda r: match.matches_record(r["queue"], r["died_at"], now), match.names_task)
