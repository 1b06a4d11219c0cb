"""Follow-ups: what a finished task's canvas says comes next, written before its ack.

:class:`FollowUps` turns a finished envelope's ``canvas`` (checked at admission) into a
:class:`FollowUp`: the next step of a chain and the link callbacks on success, the error
callbacks and ``UpstreamFailed`` records of the steps that will never run on failure, and a
chord member's join. The :class:`~hubbub.worker.writes.WriteBuffer` runs
:func:`write_followups` first in each flush, before retries, records and acks: a crash in
between sends a step again (with the same id) rather than losing the rest of a workflow.

The chord join is one atomic call of the result store that counts distinct finished members;
the worker whose join reaches the header's size reads the values in header order, publishes
the body and marks the chord fired. Nothing is kept in worker memory between tasks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hubbub._text import cap
from hubbub.canvas.nodes import (
    UPSTREAM_FAILED,
    Node,
    checked_member,
    rest_nodes,
    tail,
    task_ids,
)
from hubbub.canvas.send import Launch, Launcher, continuation
from hubbub.errors import (
    HubbubError,
    MessageError,
    MessageRejectedByBroker,
    ResultError,
    ResultUnavailable,
    TransportError,
)
from hubbub.message import Envelope, encode
from hubbub.results.base import ChordMember, ErrorInfo, ResultBackend, ResultRecord, State
from hubbub.transports.base import Outgoing, Transport
from hubbub.worker.execute import exception_text

if TYPE_CHECKING:
    from hubbub.hub import Hub

log = logging.getLogger("hubbub.worker")


@dataclass(slots=True)
class FollowUp:
    """What follows one finished task.

    Attributes:
        plan: envelopes to publish and groups to save (next step, callbacks, errbacks).
        join: the chord join of a header task that succeeded.
        member: that task's chord entry (for the body and the chord's error callbacks).
        failed: the id of a header task that failed for good (its chord fails).
        reason: why it failed, for the records of what never runs.
        encode: an envelope as the body to publish (the hub's codec, limit and signer).
        launcher: builds a chord body's or error callbacks' envelopes.
    """

    plan: Launch
    encode: Callable[[Envelope], bytes]
    launcher: Launcher
    join: ChordMember | None = None
    member: dict[str, Any] | None = None
    failed: str | None = None
    reason: str = ""


class FollowUps:
    """Builds the follow-ups of finished tasks for one worker.

    Args:
        hub: its registered tasks, default queue, codec and signer.
        max_size: the largest body the broker takes.
    """

    def __init__(self, hub: Hub, max_size: int) -> None:
        self.hub = hub
        self.launcher = Launcher(hub.tasks, hub.settings.default_queue)
        self.max_size = max_size

    def _encode(self, envelope: Envelope) -> bytes:
        return encode(envelope, self.hub.codec, self.max_size, self.hub.signer)

    def succeeded(self, env: Envelope, value: Any) -> FollowUp | None:
        """The next step and callbacks of ``env``, given its ``value``; its chord join."""
        canvas = env.canvas
        if not canvas:
            return None
        plan = Launch()
        root = env.root_id or env.id
        step = continuation(canvas.get("next") or [], canvas.get("then"))
        if step is not None:
            self.launcher.launch(step, value, parent_id=env.id, root_id=root, into=plan)
        for link in canvas.get("link") or ():
            self.launcher.launch(link, value, parent_id=env.id, root_id=root, into=plan)
        member = canvas.get("chord")
        join = None if member is None else ChordMember(member["id"], env.id, member["i"],
                                                        value)
        return FollowUp(plan, self._encode, self.launcher, join=join, member=member)

    def failed(self, env: Envelope, summary: str) -> tuple[FollowUp | None, list[ResultRecord]]:
        """The error callbacks of ``env``, which failed for good; and FAILURE records of
        every task that now never runs (the rest of its chain, its callbacks, the body of a
        chord it belongs to)."""
        canvas = env.canvas
        if not canvas:
            return None, []
        plan = Launch()
        for errback in canvas.get("err") or ():
            self.launcher.launch(errback, env.id, parent_id=env.id,
                                 root_id=env.root_id or env.id, into=plan)
        steps: list[Node] = [*(canvas.get("next") or []), *rest_nodes(canvas.get("then"))]
        member = canvas.get("chord")
        if member is None and steps:  # a header member's chain stops here: its chord fails
            end = tail(steps[-1])
            member = None if end is None else checked_member(end.get("chord"))
        never: list[Node] = steps + list(canvas.get("link") or ())
        if member is not None:
            never.append(member["body"])
        reason = cap(f"not run: task {env.task}[{env.id}] failed ({summary})")
        now = time.time()
        records = [ResultRecord(i, State.FAILURE, error=ErrorInfo(UPSTREAM_FAILED, reason),
                                finished_at=now) for i in dict.fromkeys(task_ids(never))]
        follow = FollowUp(plan, self._encode, self.launcher, member=member,
                          failed=env.id if member is not None else None, reason=reason)
        return follow, records


async def write_followups(items: Sequence[FollowUp], transport: Transport,
                          results: ResultBackend | None, ttl: float | None
                          ) -> list[ResultRecord]:
    """Join chords, save groups and publish every follow-up in ``items`` (one publish).

    Safe to call again after it raised: joins count distinct ids, and what was published
    before keeps its ids.

    Returns:
        FAILURE records for follow-ups that can never be sent (they cannot be encoded, or
        the broker refuses them), and for chord bodies whose values cannot be read.

    Raises:
        HubbubError: the broker or the store is down (the caller retries the whole step).
    """
    records: list[ResultRecord] = []
    plans = [item.plan for item in items]
    fired: list[str] = []
    if results is not None:
        fired = await _join(items, results, ttl, plans, records)
        await _fail_chords(items, results, ttl, plans)
        for plan in plans:
            for group, ids in plan.groups:
                await results.save_group(group, ids, ttl=ttl)
    elif any(item.join is not None or item.failed for item in items):
        log.error("a chord header task finished on a worker without a result store; its "
                  "chord cannot be joined (configure results on the hub)")
    outgoing: list[tuple[Outgoing, Envelope]] = []
    for item, plan in zip(items, plans, strict=True):
        for envelope in plan.envelopes:
            try:
                body = item.encode(envelope)
            except MessageError as exc:
                records.extend(_unsent(envelope, str(exc)))
                continue
            outgoing.append((Outgoing(envelope.queue, body, envelope.id, envelope.priority,
                                      envelope.eta), envelope))
    await _publish(transport, outgoing, records)
    if results is not None:
        for chord in fired:
            await results.chord_mark(chord, "fired", ttl=ttl)
    return records


async def _join(items: Sequence[FollowUp], results: ResultBackend, ttl: float | None,
                plans: list[Launch], records: list[ResultRecord]) -> list[str]:
    joining = [(i, item) for i, item in enumerate(items) if item.join is not None]
    if not joining:
        return []
    joins = await results.chord_join([item.join for _, item in joining if item.join], ttl=ttl)
    fired = []
    for (i, item), state in zip(joining, joins, strict=True):
        member = item.member
        assert member is not None
        # The join that completes the header sends the body; so does a member run again
        # after the one that completed it died before marking the chord fired.
        if state.count < member["n"] or not (state.added or not state.fired):
            continue
        chord = member["id"]
        try:
            values = await results.chord_values(chord)
        except ResultUnavailable:
            raise
        except ResultError as exc:  # a value this worker cannot decode: it never will
            reason = cap(f"not run: the values of chord {chord} cannot be read ({exc})")
            records.extend(ResultRecord(t, State.FAILURE, error=ErrorInfo(UPSTREAM_FAILED,
                                        reason), finished_at=time.time())
                           for t in task_ids([member["body"]]))
            continue
        if len(values) < member["n"]:  # expired under us; never fire with a partial header
            log.error("chord %s lost member values (expired?); its body is not sent", chord)
            continue
        plans[i] = Launch([*plans[i].envelopes], [*plans[i].groups])
        item.launcher.launch(member["body"], values[:member["n"]], parent_id=chord,
                             into=plans[i])
        fired.append(chord)
    return fired


async def _fail_chords(items: Sequence[FollowUp], results: ResultBackend, ttl: float | None,
                       plans: list[Launch]) -> None:
    for i, item in enumerate(items):
        if item.failed is None or item.member is None:
            continue
        member = item.member
        if not await results.chord_mark(member["id"], "failed", ttl=ttl):
            continue  # another header task failed first: its error callbacks ran
        plans[i] = Launch([*plans[i].envelopes], [*plans[i].groups])
        for errback in member.get("err") or ():
            item.launcher.launch(errback, item.failed, parent_id=item.failed, into=plans[i])


async def _publish(transport: Transport, outgoing: list[tuple[Outgoing, Envelope]],
                   records: list[ResultRecord]) -> None:
    if not outgoing:
        return
    try:
        await transport.publish([o for o, _ in outgoing])
        return
    except (MessageRejectedByBroker, MessageError):
        pass
    except HubbubError:
        raise  # down or busy: the flush retries
    for item, envelope in outgoing:  # one refused: find it, send the others
        try:
            await transport.publish([item])
        except (MessageRejectedByBroker, MessageError) as exc:
            records.extend(_unsent(envelope, exception_text(exc)))
        except TransportError:
            raise


def _unsent(envelope: Envelope, reason: str) -> list[ResultRecord]:
    """FAILURE records for a follow-up that can never be sent, and for what follows it."""
    log.error("follow-up %s[%s] cannot be sent: %s", envelope.task, envelope.id, reason)
    now = time.time()
    error = ErrorInfo(UPSTREAM_FAILED, cap(f"its message could not be sent: {reason}"))
    records = [ResultRecord(envelope.id, State.FAILURE, envelope.task, error=error,
                            finished_at=now)]
    canvas = envelope.canvas or {}
    never = [*(canvas.get("next") or []), *rest_nodes(canvas.get("then")),
             *(canvas.get("link") or [])]
    records.extend(ResultRecord(i, State.FAILURE, error=error, finished_at=now)
                   for i in dict.fromkeys(task_ids(never)))
    return records
