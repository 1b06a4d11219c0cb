"""Beanstalkd's dead letters: buried jobs, each with a reason record in the tube
``<prefix>$dead`` (see docs/beanstalk.md).

A record is a ready JSON job ``{"job", "id", "queue", "priority", "reason", "died_at"}``
naming the buried job. Reading dead letters reserves every record on the *admin* connection
and releases what it does not delete; a record whose job is gone (deleted or kicked by
someone else) is stale and deleted. A requeue puts the job again, so its count starts over.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from hubbub._text import MAX_REASON, cap
from hubbub.clock import Clock
from hubbub.transports._beanstalk_jobs import BATCH, MAGIC, Tubes, put, unframe
from hubbub.transports._beanstalk_wire import Connection, Connections, parse_yaml
from hubbub.transports._dead import Retention
from hubbub.transports._dead import dropped as log_dropped
from hubbub.transports.base import DeadLetter, Delivery

RECORD_TTR = 120
Record = dict[str, Any]


def record_of(data: bytes | None) -> Record:
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


class DeadLetters:
    """The buried jobs of the queues under one prefix and their records.

    Args:
        conns: the transport's connections (*put* writes, *admin* reads the records).
        tubes: the names of the queues' tubes and of the records' tube.
        retention: how long and how many dead letters are kept.
        clock: the source of wall time.
        ttr: the TTR a requeued job is put with.
    """

    def __init__(self, conns: Connections, tubes: Tubes, retention: Retention, clock: Clock,
                 ttr: int) -> None:
        self._conns, self._tubes = conns, tubes
        self._retention, self._clock, self._ttr = retention, clock, ttr

    async def record(self, buried: Sequence[tuple[Delivery, str]], now: float) -> None:
        """Write a record for each buried delivery (with its reason), then keep the dead
        letters of their queues within the cap and the retention."""
        records = [(self._tubes.dead, 0, None, json.dumps({
            "job": d.receipt[1], "id": d.id, "queue": d.queue, "priority": d.priority,
            "reason": cap(reason, MAX_REASON), "died_at": now}).encode())
            for d, reason in buried]
        await put(self._conns, self._tubes, records, now=self._clock.time(), ttr=RECORD_TTR)

    async def prune(self, queues: Sequence[str], now: float) -> None:
        """Keep dead letters within the cap and the retention, cheaply enough for every write.

        The retention first: records are ready jobs of one priority, so ``peek-ready`` gives
        the oldest; expired or stale ones are deleted with their jobs until a live one is met.
        Then the cap: ``stats-tube`` counts each queue's buried jobs; the oldest past the cap
        are deleted (``peek-buried`` gives the oldest). Their records go stale and are dropped
        when they reach the head of the records tube, or when dead letters are read.
        """
        conn = await self._conns.open("put")
        cutoff, expired = self._retention.cutoff(now), dict[str, int]()
        for _ in range(BATCH):  # bounded per write; the next write goes on
            *_, (found, data) = await conn.call(*conn.use(self._tubes.dead), b"peek-ready\r\n")
            record = record_of(data) if found[0] == "FOUND" else {}
            if not record:
                break  # empty, or another tool's job at the head: left alone
            if record["died_at"] >= cutoff:
                [(alive, _)] = await conn.call(b"peek %d\r\n" % record["job"])
                if alive[0] == "FOUND":
                    break  # the oldest record is live: nothing older to drop
            else:
                [(done, _)] = await conn.call(b"delete %d\r\n" % record["job"])
                if done[0] == "DELETED":
                    expired[record["queue"]] = expired.get(record["queue"], 0) + 1
            await conn.call(b"delete %s\r\n" % found[1].encode())
        for queue, count in sorted(expired.items()):
            log_dropped(queue, count, f"older than the retention of {self._retention.ttl:g}s")
        replies = await conn.call(*[b"stats-tube %s\r\n" % self._tubes.tube(q).encode()
                                    for q in queues])
        for queue, (words, data) in zip(queues, replies, strict=True):
            buried = int(parse_yaml(data).get("current-jobs-buried", 0)) if words[0] == "OK" else 0
            over = 0
            for _ in range(buried - self._retention.limit):
                *_, (found, _) = await conn.call(*conn.use(self._tubes.tube(queue)),
                                                 b"peek-buried\r\n")
                if found[0] != "FOUND":
                    break
                [(done, _)] = await conn.call(b"delete %s\r\n" % found[1].encode())
                over += done[0] == "DELETED"
            log_dropped(queue, over, f"over the cap of {self._retention.limit}, oldest first")

    async def _records(self) -> tuple[Connection, list[tuple[int, Record]]]:
        """Reserve every dead-letter record, oldest first; the caller releases them."""
        admin = await self._conns.open("admin")
        out: list[tuple[int, Record]] = []
        cmds = admin.watch([self._tubes.dead])
        while True:
            replies = await admin.call(*cmds, *[b"reserve-with-timeout 0\r\n"] * BATCH)
            got = [(int(w[1]), record_of(d)) for w, d in replies if w[0] == "RESERVED"]
            out += got
            cmds = []
            if len(got) < BATCH:
                return admin, out

    async def _matching(self, match: Callable[[Record], bool], limit: int) -> tuple[
            Connection, list[int], list[tuple[int, Record, bytes]]]:
        """Reserve all records and read the buried jobs of up to ``limit`` matching ones.

        Returns the admin connection, the records to release untouched, and
        (record id, record, body) for each match. Records whose job is gone are deleted.
        """
        admin, records = await self._records()
        wanted = [(rid, r) for rid, r in records if r and match(r)][:limit]
        peeks = await admin.call(*[b"peek %d\r\n" % int(r["job"]) for _, r in wanted])
        found = [(rid, r, unframe(job or b"", "")[1])
                 for (rid, r), (words, job) in zip(wanted, peeks, strict=True)
                 if words[0] == "FOUND"]
        stale = [rid for (rid, _), (words, _) in zip(wanted, peeks, strict=True)
                 if words[0] != "FOUND"]  # buried job deleted or kicked by someone else
        await admin.call(*[b"delete %d\r\n" % rid for rid in stale])
        taken = {rid for rid, _, _ in found} | set(stale)
        return admin, [rid for rid, _ in records if rid not in taken], found

    async def read(self, queue: str | None, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` dead letters within the retention, of ``queue`` or of all."""
        cutoff = self._retention.cutoff(self._clock.time())
        with self._conns.guard():
            admin, rest, found = await self._matching(
                lambda r: (queue is None or r["queue"] == queue) and r["died_at"] >= cutoff,
                limit)
            await admin.call(*[b"release %d 0 0\r\n" % rid
                               for rid in rest + [rid for rid, _, _ in found]])
        return [DeadLetter(r["id"], r["queue"], body, r["reason"], r["died_at"])
                for _, r, body in found]

    async def requeue(self, ids: Sequence[str] | None) -> int:
        """Put the dead letters of ``ids`` (all for None) back on their queues."""
        wanted = None if ids is None else set(ids)
        with self._conns.guard():
            admin, rest, found = await self._matching(
                lambda r: wanted is None or r["id"] in wanted, 1 << 62)
            done = False
            try:  # put again first: a crash in between duplicates a message, never loses one
                await put(self._conns, self._tubes,
                          [(self._tubes.tube(r["queue"]), r.get("priority", 0), None,
                            MAGIC + r["id"].encode() + b"\n" + body) for _, r, body in found],
                          now=self._clock.time(), ttr=self._ttr)
                conn = await self._conns.open("put")
                await conn.call(*[b"delete %d\r\n" % int(r["job"]) for _, r, _ in found])
                await admin.call(*[b"delete %d\r\n" % rid for rid, _, _ in found])
                done = True
            finally:
                back = rest if done else rest + [rid for rid, _, _ in found]
                await admin.call(*[b"release %d 0 0\r\n" % rid for rid in back])
        return len(found)

    async def remove(self, match: Callable[[Record], bool],
                     body_matches: Callable[[bytes], bool]) -> int:
        """Delete the buried jobs and records of the dead letters whose record ``match``es
        and whose body ``body_matches``; release every other record. Returns how many."""
        with self._conns.guard():
            admin, rest, found = await self._matching(match, 1 << 62)
            doomed = [(rid, r) for rid, r, body in found if body_matches(body)]
            back = rest + [rid for rid, r, body in found if not body_matches(body)]
            try:
                conn = await self._conns.open("put")
                await conn.call(*[b"delete %d\r\n" % int(r["job"]) for _, r in doomed])
                await admin.call(*[b"delete %d\r\n" % rid for rid, _ in doomed])
            except BaseException:
                back += [rid for rid, _ in doomed]
                raise
            finally:
                await admin.call(*[b"release %d 0 0\r\n" % rid for rid in back])
        return len(doomed)
