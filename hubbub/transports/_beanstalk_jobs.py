"""How hubbub's messages become beanstalkd jobs: tube names, the job's framing, priorities,
delays, and putting a batch of jobs (see docs/beanstalk.md).

A queue is the tube ``<prefix>.<queue>``, its bytes outside ``A-Za-z0-9_+/;().-`` written as
``$XX``. A job is ``MAGIC + id + b"\\n" + body``; beanstalkd's priority is lower-first, so
hubbub's 0..9 become ``PRIORITY_BASE - priority``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from urllib.parse import unquote

from hubbub.errors import ConfigurationError, MessageRejectedByBroker
from hubbub.transports._beanstalk_wire import Connections, expect
from hubbub.transports._safe import due_at

PRIORITY_BASE = 1024  # hubbub priority 0 is beanstalkd's customary default priority
MAGIC = b"hb1 "  # job body: MAGIC + id + b"\n" + body
MAX_DELAY = 2**32 - 1  # beanstalkd reads delays (and TTRs) as 32-bit unsigned seconds
BATCH = 256  # commands written at once
_SAFE = re.compile(r"[A-Za-z0-9_+/;().-]")

# What a put takes: (tube, hubbub priority, eta or None, framed job)
Job = tuple[str, int, float | None, bytes]


def unframe(job: bytes, jid: str) -> tuple[str, bytes]:
    """(message id, body) of a job; a job not put by hubbub, or with an empty id, gets its
    job id. An id that is not UTF-8 keeps its bytes as ``\\x..`` escapes."""
    if job.startswith(MAGIC) and b"\n" in job:
        head, body = job[len(MAGIC):].split(b"\n", 1)
        return head.decode("utf-8", "backslashreplace") or f"beanstalk-{jid}", body
    return f"beanstalk-{jid}", job


def delay_seconds(delay: float) -> int:
    """Whole seconds of delay beanstalkd accepts: NaN and negatives are 0, at most MAX_DELAY."""
    if math.isnan(delay) or delay <= 0:
        return 0
    return min(math.ceil(min(delay, MAX_DELAY)), MAX_DELAY)


def pri(priority: int) -> int:
    """beanstalkd's priority (lower first) for a hubbub one (0..9, higher first)."""
    return PRIORITY_BASE - min(max(priority, 0), 9)


class Tubes:
    """The tubes of the queues under ``prefix``, and the tube of their dead-letter records."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.dead = f"{prefix}$dead"

    def tube(self, queue: str) -> str:
        """The tube of ``queue``.

        Raises:
            ConfigurationError: ``queue`` is empty, or too long for a tube with the prefix.
        """
        enc = "".join(c if _SAFE.fullmatch(c) else "".join(f"${b:02X}" for b in c.encode())
                      for c in queue)
        tube = f"{self.prefix}.{enc}"
        if not queue or len(tube) > 200:
            raise ConfigurationError(
                f"queue name {queue!r} does not fit a beanstalkd tube (1..200 bytes with prefix)"
            )
        return tube

    def queue(self, tube: str) -> str | None:
        """The queue whose tube is ``tube``; None for a tube of another prefix or tool."""
        head = self.prefix + "."
        if not tube.startswith(head):
            return None
        return unquote(re.sub(r"\$([0-9A-F]{2})", r"%\1", tube[len(head):]))


async def put(conns: Connections, tubes: Tubes, jobs: Sequence[Job], *, now: float,
              ttr: int) -> None:
    """Put ``jobs`` on the *put* connection, ``BATCH`` commands per write, each delayed
    until its eta.

    Raises:
        MessageRejectedByBroker: the server refused a job as too big (the rest were put).
        TransportUnavailable: the server cannot be reached or did not answer in time.
    """
    with conns.guard():
        async with conns.bounded():
            conn = await conns.open("put")
            for start in range(0, len(jobs), BATCH):
                cmds: list[bytes] = []
                puts: list[tuple[str, bytes] | None] = []  # per command: what it puts
                for tube, priority, eta, job in jobs[start:start + BATCH]:
                    at = due_at(eta, now, MAX_DELAY)  # NaN: now; too far: the maximum
                    delay = 0 if at is None else delay_seconds(at - now)
                    use = conn.use(tube)
                    cmds += use
                    puts += [None] * len(use) + [(tube, job)]
                    cmds.append(b"put %d %d %d %d\r\n%s\r\n"
                                % (pri(priority), delay, ttr, len(job), job))
                too_big = None
                for job_put, reply in zip(puts, await conn.call(*cmds), strict=True):
                    if reply[0][:1] == ["JOB_TOO_BIG"] and job_put is not None:
                        too_big = too_big or job_put  # the rest of the batch went through
                    else:
                        expect(reply, "USING", "INSERTED")
                if too_big is not None:
                    tube, job = too_big
                    raise MessageRejectedByBroker(
                        unframe(job, "?")[0], tubes.queue(tube) or tube,
                        f"{conns.where} refused {len(job)} bytes as too big (its -z"
                        " option); the other jobs of the batch were put")
