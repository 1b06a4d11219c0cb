"""Beanstalkd: ``beanstalk://host:11300/?prefix=hubbub&ttr=5`` (see docs/beanstalk.md).

Tubes ``<prefix>.<queue>`` with native priorities, delays and ``bury``, over the small
asyncio protocol client in ``_beanstalk_wire`` (not greenstalk on threads).
``touch``/``delete``/``release``/``bury`` only work on the reserving connection, so the
*jobs* connection owns every lease and never blocks (``reserve-with-timeout 0``); a waiting
fetch blocks on *waiter* in 1 s slices and releases what it gets for *jobs* to take. TTR is
fixed at ``put``, so jobs are put with TTR ``ttr`` and touched until their hubbub lease runs
out. Attempts are ``reserves - releases``. Dead letters are buried jobs plus reason records
in the tube ``<prefix>$dead``; a requeue puts the job again so its count starts over.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from hubbub._suggest import did_you_mean
from hubbub._text import MAX_REASON, cap, clean_text
from hubbub.clock import SYSTEM_CLOCK, Clock
from hubbub.errors import ConfigurationError, MessageRejectedByBroker, TransportUnavailable
from hubbub.transports._beanstalk_wire import Connection, Reply, expect, parse_yaml
from hubbub.transports._dead import OPTIONS as DEAD_OPTIONS
from hubbub.transports._dead import DeadFilter, retention_of
from hubbub.transports._dead import dropped as log_dropped
from hubbub.transports._safe import check_queue, due_at
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
PRIORITY_BASE = 1024  # hubbub priority 0 is beanstalkd's customary default priority
MAGIC = b"hb1 "  # job body: MAGIC + id + b"\n" + body
_SAFE = re.compile(r"[A-Za-z0-9_+/;().-]")
_BATCH = 256  # commands written at once
_RECORD_TTR = 120
MAX_DELAY = 2**32 - 1  # beanstalkd reads delays (and TTRs) as 32-bit unsigned seconds


@dataclasses.dataclass(slots=True)
class _Lease:
    conn: Connection
    lease_until: float
    touched_at: float


def _unframe(job: bytes, jid: str) -> tuple[str, bytes]:
    """(message id, body) of a job; a job not put by hubbub, or with an empty id, gets its
    job id. An id that is not UTF-8 keeps its bytes as ``\\x..`` escapes."""
    if job.startswith(MAGIC) and b"\n" in job:
        head, body = job[len(MAGIC):].split(b"\n", 1)
        return head.decode("utf-8", "backslashreplace") or f"beanstalk-{jid}", body
    return f"beanstalk-{jid}", job


def _record(data: bytes | None) -> dict[str, Any]:
    """A dead-letter record; ``{}`` (never matched, left alone) when another tool put
    something else into the tube."""
    try:
        record = json.loads(data or b"{}")
    except ValueError:
        return {}
    if not isinstance(record, dict) or not isinstance(record.get("job"), int):
        return {}
    record["id"] = str(record.get("id", f"beanstalk-{record['job']}"))
    record["queue"] = str(record.get("queue", ""))
    record["reason"] = str(record.get("reason", ""))
    died = record.get("died_at")
    record["died_at"] = float(died) if isinstance(died, int | float) else 0.0
    return record


def _seconds(delay: float) -> int:
    """Whole seconds of delay beanstalkd accepts: NaN and negatives are 0, at most MAX_DELAY."""
    if math.isnan(delay) or delay <= 0:
        return 0
    return min(math.ceil(min(delay, MAX_DELAY)), MAX_DELAY)


def _pri(priority: int) -> int:
    """beanstalkd's priority (lower first) for a hubbub one (0..9, higher first)."""
    return PRIORITY_BASE - min(max(priority, 0), 9)


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
        self._where = f"beanstalkd at {self.host}:{self.port}"
        self._conns: dict[str, Connection] = {}
        self._opening: dict[str, asyncio.Lock] = {}
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

    # -- names ---------------------------------------------------------------------------

    def _tube(self, queue: str) -> str:
        enc = "".join(c if _SAFE.fullmatch(c) else "".join(f"${b:02X}" for b in c.encode())
                      for c in queue)
        tube = f"{self.prefix}.{enc}"
        if not queue or len(tube) > 200:
            raise ConfigurationError(
                f"queue name {queue!r} does not fit a beanstalkd tube (1..200 bytes with prefix)"
            )
        return tube

    def _queue(self, tube: str) -> str | None:
        head = self.prefix + "."
        if not tube.startswith(head):
            return None
        return unquote(re.sub(r"\$([0-9A-F]{2})", r"%\1", tube[len(head):]))

    @property
    def _dead_tube(self) -> str:
        return f"{self.prefix}$dead"

    # -- connections ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except (ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            raise TransportUnavailable(f"{self._where}: {exc}") from exc

    async def _conn(self, role: str) -> Connection:
        conn = self._conns.get(role)
        if conn is not None and not conn.closed:
            return conn
        async with self._opening.setdefault(role, asyncio.Lock()):
            conn = self._conns.get(role)
            if conn is None or conn.closed:
                if conn is not None:
                    await conn.close()  # the server went away; drop its socket cleanly
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(self.host, self.port), self.connect_timeout
                    )
                except (OSError, TimeoutError) as exc:
                    raise TransportUnavailable(
                        f"{self._where} cannot be reached ({exc or 'timed out'});"
                        " is beanstalkd running?"
                    ) from exc
                conn = self._conns[role] = Connection(reader, writer)
            return conn

    async def connect(self) -> None:
        with self._guard():
            put = await self._conn("put")
            [reply] = await put.call(b"stats\r\n")
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
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            await conn.close()

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
                f"{len(job)} bytes with framing; {self._where} takes jobs up to"
                f" {self.max_job_size} bytes (its -z option): send large payloads by reference"
            )
        return job

    def _checked(self, item: Outgoing) -> tuple[str, int, float | None, bytes]:
        check_queue(item)
        try:
            tube = self._tube(item.queue)
        except ConfigurationError as exc:
            raise MessageRejectedByBroker(item.id, item.queue, str(exc)) from None
        return tube, item.priority, item.eta, self._frame(item)

    async def publish(self, items: Sequence[Outgoing]) -> None:
        await self._put([self._checked(i) for i in items])  # all checked before any is sent

    async def _put(self, jobs: Sequence[tuple[str, int, float | None, bytes]],
                   ttr: int | None = None) -> None:
        now = self.clock.time()
        with self._guard():
            async with self._bounded():
                put = await self._conn("put")
                for start in range(0, len(jobs), _BATCH):
                    cmds: list[bytes] = []
                    puts: list[tuple[str, bytes] | None] = []  # per command: what it puts
                    for tube, priority, eta, job in jobs[start:start + _BATCH]:
                        at = due_at(eta, now, MAX_DELAY)  # NaN: now; too far: the maximum
                        delay = 0 if at is None else _seconds(at - now)
                        use = put.use(tube)
                        cmds += use
                        puts += [None] * len(use) + [(tube, job)]
                        cmds.append(b"put %d %d %d %d\r\n%s\r\n"
                                    % (_pri(priority), delay, ttr or self.ttr, len(job), job))
                    too_big = None
                    for job_put, reply in zip(puts, await put.call(*cmds), strict=True):
                        if reply[0][:1] == ["JOB_TOO_BIG"] and job_put is not None:
                            too_big = too_big or job_put  # the rest of the batch went through
                        else:
                            expect(reply, "USING", "INSERTED")
                    if too_big is not None:
                        tube, job = too_big
                        raise MessageRejectedByBroker(
                            _unframe(job, "?")[0], self._queue(tube) or tube,
                            f"{self._where} refused {len(job)} bytes as too big (its -z"
                            " option); the other jobs of the batch were put")

    @contextlib.asynccontextmanager
    async def _bounded(self) -> AsyncIterator[None]:
        """Bound a publish by ``publish_timeout``: a server that stops answering (stopped,
        swapping, a dead network without a reset) must not hang the caller. What timed out
        may still have been put."""
        try:
            async with asyncio.timeout(self.publish_timeout):
                yield
        except TimeoutError as exc:
            raise TransportUnavailable(
                f"{self._where} did not answer a put within {self.publish_timeout:g}s;"
                " is it running and reachable?"
            ) from exc

    # -- leasing -------------------------------------------------------------------------

    async def fetch(
        self, queues: Sequence[str], *, limit: int, lease: float, wait: float
    ) -> list[Delivery]:
        tubes = [self._tube(q) for q in dict.fromkeys(queues)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        with self._guard():
            while True:
                got = await self._reserve(tubes, limit, lease)
                remaining = deadline - loop.time()
                if got or remaining <= 0 or not tubes:
                    return got
                if self._waiting is None or self._waiting.done():
                    waiter = await self._conn("waiter")
                    self._waiting = loop.create_task(self._wait_ready(waiter, tubes))
                await asyncio.wait({self._waiting}, timeout=remaining)

    async def _wait_ready(self, waiter: Connection, tubes: Sequence[str]) -> None:
        """Block (1 s at most) until a job is ready in ``tubes``; put it straight back."""
        try:
            *_, (words, _) = await waiter.call(*waiter.watch(tubes), b"reserve-with-timeout 1\r\n")
            if words[0] == "RESERVED":
                [(_, stats)] = await waiter.call(b"stats-job %s\r\n" % words[1].encode())
                pri = parse_yaml(stats).get("pri", str(PRIORITY_BASE))
                await waiter.call(b"release %s %s 0\r\n" % (words[1].encode(), pri.encode()))
        except ConnectionError:
            return  # the jobs connection reports an outage on the next reserve

    async def _reserve(self, tubes: Sequence[str], limit: int, lease: float) -> list[Delivery]:
        if not tubes or limit <= 0:
            return []
        jobs = await self._conn("jobs")
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
            ident, body = _unframe(job, jid)
            attempts = int(info.get("reserves", "1")) - int(info.get("releases", "0"))
            priority = min(max(PRIORITY_BASE - int(info.get("pri", PRIORITY_BASE)), 0), 9)
            queue = self._queue(info.get("tube", "")) or info.get("tube", "")
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
        with self._guard():
            return live, await conn.call(*map(command, live))

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        _, replies = await self._on_jobs(deliveries, lambda d: b"delete %d\r\n" % d.receipt[1])
        for reply in replies:
            expect(reply, "DELETED", "NOT_FOUND")

    async def release(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        seconds = _seconds(delay)
        _, replies = await self._on_jobs(
            deliveries,
            lambda d: b"release %d %d %d\r\n" % (d.receipt[1], _pri(d.priority), seconds),
        )
        for reply in replies:
            expect(reply, "RELEASED", "NOT_FOUND")

    async def dead_letter(self, requests: Sequence[DeadLetterRequest]) -> None:
        live, replies = await self._on_jobs(
            [r.delivery for r in requests],
            lambda d: b"bury %d %d\r\n" % (d.receipt[1], _pri(d.priority)),
        )
        now = self.clock.time()
        reasons = {id(r.delivery): r.reason for r in requests}
        records = []
        for d, reply in zip(live, replies, strict=True):
            if expect(reply, "BURIED", "NOT_FOUND")[0] == "BURIED":
                record = {"job": d.receipt[1], "id": d.id, "queue": d.queue,
                          "priority": d.priority, "reason": cap(reasons[id(d)], MAX_REASON),
                          "died_at": now}
                records.append((self._dead_tube, 0, None, json.dumps(record).encode()))
        await self._put(records, ttr=_RECORD_TTR)
        if live:
            with self._guard():
                await self._prune(sorted({d.queue for d in live}), now)

    async def _prune(self, queues: Sequence[str], now: float) -> None:
        """Keep dead letters within the cap and the retention, cheaply enough for every write.

        The retention first: records are ready jobs of one priority, so ``peek-ready`` gives
        the oldest; expired or stale ones are deleted with their jobs until a live one is met.
        Then the cap: ``stats-tube`` counts each queue's buried jobs; the oldest past the cap
        are deleted (``peek-buried`` gives the oldest). Their records go stale and are dropped
        when they reach the head of the records tube, or when dead letters are read.
        """
        put = await self._conn("put")
        cutoff, expired = self.retention.cutoff(now), dict[str, int]()
        for _ in range(_BATCH):  # bounded per write; the next write goes on
            *_, (found, data) = await put.call(*put.use(self._dead_tube), b"peek-ready\r\n")
            record = _record(data) if found[0] == "FOUND" else {}
            if not record:
                break  # empty, or another tool's job at the head: left alone
            if record["died_at"] >= cutoff:
                [(alive, _)] = await put.call(b"peek %d\r\n" % record["job"])
                if alive[0] == "FOUND":
                    break  # the oldest record is live: nothing older to drop
            else:
                [(done, _)] = await put.call(b"delete %d\r\n" % record["job"])
                if done[0] == "DELETED":
                    expired[record["queue"]] = expired.get(record["queue"], 0) + 1
            await put.call(b"delete %s\r\n" % found[1].encode())
        for queue, count in sorted(expired.items()):
            log_dropped(queue, count, f"older than the retention of {self.retention.ttl:g}s")
        replies = await put.call(*[b"stats-tube %s\r\n" % self._tube(q).encode()
                                   for q in queues])
        for queue, (words, data) in zip(queues, replies, strict=True):
            buried = int(parse_yaml(data).get("current-jobs-buried", 0)) if words[0] == "OK" else 0
            over = 0
            for _ in range(buried - self.retention.limit):
                *_, (found, _) = await put.call(*put.use(self._tube(queue)), b"peek-buried\r\n")
                if found[0] != "FOUND":
                    break
                [(done, _)] = await put.call(b"delete %s\r\n" % found[1].encode())
                over += done[0] == "DELETED"
            log_dropped(queue, over, f"over the cap of {self.retention.limit}, oldest first")

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        with self._guard():
            lost = set(await self._touch([d.receipt[1] for d in deliveries]))
        until = self.clock.time() + lease
        for d in deliveries:
            held = self._held.get(d.receipt[1])
            if d.receipt[1] not in lost and held is not None:
                held.lease_until = d.lease_until = until
        return [d for d in deliveries if d.receipt[1] in lost]

    # -- inspection ----------------------------------------------------------------------

    async def purge(self, queue: str) -> int:
        tube, count = self._tube(queue), 0
        with self._guard():
            put = await self._conn("put")
            for peek in (b"peek-ready\r\n", b"peek-delayed\r\n"):
                while True:
                    *_, (words, _) = await put.call(*put.use(tube), peek)
                    if words[0] != "FOUND":
                        break
                    [(done, _)] = await put.call(b"delete %s\r\n" % words[1].encode())
                    count += done[0] == "DELETED"
        return count

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        with self._guard():
            put = await self._conn("put")
            if queues is None:
                [(_, data)] = await put.call(b"list-tubes\r\n")
                names = [line[2:] for line in (data or b"").decode().splitlines()
                         if line.startswith("- ")]
                queues = sorted(q for q in map(self._queue, names) if q is not None)
            if not queues:
                return []
            replies = await put.call(*[b"stats-tube %s\r\n" % self._tube(q).encode()
                                       for q in queues])
        out = []
        for queue, (words, data) in zip(queues, replies, strict=True):
            s = parse_yaml(data) if words[0] == "OK" else {}
            out.append(QueueStats(queue, int(s.get("current-jobs-ready", 0)),
                                  int(s.get("current-jobs-delayed", 0)),
                                  int(s.get("current-jobs-reserved", 0)),
                                  int(s.get("current-jobs-buried", 0))))
        return out

    async def _records(self) -> tuple[Connection, list[tuple[int, dict[str, Any]]]]:
        """Reserve every dead-letter record, oldest first; the caller releases them."""
        admin = await self._conn("admin")
        out: list[tuple[int, dict[str, Any]]] = []
        cmds = admin.watch([self._dead_tube])
        while True:
            replies = await admin.call(*cmds, *[b"reserve-with-timeout 0\r\n"] * _BATCH)
            got = [(int(w[1]), _record(d)) for w, d in replies if w[0] == "RESERVED"]
            out += got
            cmds = []
            if len(got) < _BATCH:
                return admin, out

    async def _dead(self, match: Callable[[dict[str, Any]], bool], limit: int) -> tuple[
            Connection, list[int], list[tuple[int, dict[str, Any], bytes]]]:
        """Reserve all records and read the buried jobs of up to ``limit`` matching ones.

        Returns the admin connection, the records to release untouched, and
        (record id, record, body) for each match. Records whose job is gone are deleted.
        """
        admin, records = await self._records()
        wanted = [(rid, r) for rid, r in records if r and match(r)][:limit]
        peeks = await admin.call(*[b"peek %d\r\n" % int(r["job"]) for _, r in wanted])
        found = [(rid, r, _unframe(job or b"", "")[1])
                 for (rid, r), (words, job) in zip(wanted, peeks, strict=True)
                 if words[0] == "FOUND"]
        stale = [rid for (rid, _), (words, _) in zip(wanted, peeks, strict=True)
                 if words[0] != "FOUND"]  # buried job deleted or kicked by someone else
        await admin.call(*[b"delete %d\r\n" % rid for rid in stale])
        taken = {rid for rid, _, _ in found} | set(stale)
        return admin, [rid for rid, _ in records if rid not in taken], found

    async def list_dead(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        cutoff = self.retention.cutoff(self.clock.time())
        with self._guard():
            admin, rest, found = await self._dead(
                lambda r: (queue is None or r["queue"] == queue) and r["died_at"] >= cutoff,
                limit)
            await admin.call(*[b"release %d 0 0\r\n" % rid
                               for rid in rest + [rid for rid, _, _ in found]])
        return [DeadLetter(r["id"], r["queue"], body, r["reason"], r["died_at"])
                for _, r, body in found]

    async def requeue_dead(self, ids: Sequence[str] | None = None) -> int:
        wanted = None if ids is None else set(ids)
        with self._guard():
            admin, rest, found = await self._dead(
                lambda r: wanted is None or r["id"] in wanted, 1 << 62)
            done = False
            try:  # put again first: a crash in between duplicates a message, never loses one
                await self._put([(self._tube(r["queue"]), r.get("priority", 0), None,
                                  MAGIC + r["id"].encode() + b"\n" + body)
                                 for _, r, body in found])
                put = await self._conn("put")
                await put.call(*[b"delete %d\r\n" % int(r["job"]) for _, r, _ in found])
                await admin.call(*[b"delete %d\r\n" % rid for rid, _, _ in found])
                done = True
            finally:
                back = rest if done else rest + [rid for rid, _, _ in found]
                await admin.call(*[b"release %d 0 0\r\n" % rid for rid in back])
        return len(found)

    async def _remove(self, match: Callable[[dict[str, Any]], bool],
                      body_matches: Callable[[bytes], bool]) -> int:
        """Delete the buried jobs and records of the dead letters whose record ``match``es
        and whose body ``body_matches``; release every other record. Returns how many."""
        with self._guard():
            admin, rest, found = await self._dead(match, 1 << 62)
            doomed = [(rid, r) for rid, r, body in found if body_matches(body)]
            back = rest + [rid for rid, r, body in found if not body_matches(body)]
            try:
                put = await self._conn("put")
                await put.call(*[b"delete %d\r\n" % int(r["job"]) for _, r in doomed])
                await admin.call(*[b"delete %d\r\n" % rid for rid, _ in doomed])
            except BaseException:
                back += [rid for rid, _ in doomed]
                raise
            finally:
                await admin.call(*[b"release %d 0 0\r\n" % rid for rid in back])
        return len(doomed)

    async def delete_dead(self, ids: Sequence[str]) -> int:
        wanted = {clean_text(i) for i in ids}
        if not wanted:
            return 0
        return await self._remove(lambda r: r["id"] in wanted, lambda _body: True)

    async def purge_dead(self, *, older_than: float | None = None, task: str | None = None,
                         queue: str | None = None) -> int:
        match, now = DeadFilter(older_than, task, queue), self.clock.time()
        return await self._remove(lambda r: match.matches_record(r["queue"], r["died_at"], now),
                                  match.names_task)
