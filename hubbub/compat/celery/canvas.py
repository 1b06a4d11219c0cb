"""Celery chains on the bridge: a plain chain runs, step after step; other canvas does not.

Celery protocol v2 carries the rest of a chain inside each message (``embed["chain"]``, the
remaining signatures, last to run first). The worker that finishes a step sends the next one
with the step's result prepended to its arguments (unless the signature is immutable),
``parent_id`` set to the step just run and the rest of the chain inside. The bridge does the
same, before the step is acked, so a crash repeats a step rather than losing the chain.

Only a plain chain is run: its steps are plain task signatures. Callbacks, errbacks, chords,
links and nested groups or chords are refused by :func:`hubbub.compat.celery.protocol.
to_envelope` with a reason saying the bridge does not support that canvas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hubbub.job import Succeeded
from hubbub.message import Envelope, new_id
from hubbub.middleware import DispatchContext, DispatchNext, Middleware

if TYPE_CHECKING:
    from hubbub.job import Outcome

    from ._common import CelerySource

CHAIN = "celery_chain"  # the envelope header holding the rest of a chain
_LINKS = ("link", "link_error", "chord", "group_id")


def plain_chain(chain: Any) -> list[dict[str, Any]] | None:
    """``chain`` when every step is a plain task signature, else None."""
    if not isinstance(chain, list):
        return None
    for step in chain:
        if not isinstance(step, dict) or not isinstance(step.get("task"), str):
            return None
        if step.get("subtask_type") or not isinstance(step.get("args", []), list | tuple):
            return None
        if not isinstance(step.get("kwargs", {}), dict):
            return None
        options = step.get("options") or {}
        if not isinstance(options, dict) or any(options.get(k) for k in _LINKS):
            return None
    return chain


def next_step(env: Envelope, value: Any) -> Envelope | None:
    """The envelope of the chain step after ``env``, which returned ``value``; None at the
    end of the chain."""
    chain = env.headers.get(CHAIN)
    if not chain:
        return None
    step, rest = chain[-1], chain[:-1]
    options = step.get("options") or {}
    args = list(step.get("args") or ())
    if not step.get("immutable"):
        args.insert(0, value)
    task_id = options.get("task_id")
    queue = options.get("queue")
    return Envelope(
        task=step["task"], args=tuple(args), kwargs=dict(step.get("kwargs") or {}),
        id=task_id if isinstance(task_id, str) and task_id else new_id(),
        queue=queue if isinstance(queue, str) and queue else env.queue,
        parent_id=env.id, root_id=env.root_id or env.id,
        headers={"protocol": "celery", **({CHAIN: rest} if rest else {})})


class CeleryChainMiddleware(Middleware):
    """Sends the next step of a Celery chain when a bridged step succeeds, before its ack.

    A send that fails is raised: the worker records the step as crashed (it is not acked as
    a success whose chain was lost).
    """

    def __init__(self, source: CelerySource) -> None:
        self.source = source

    async def around_dispatch(self, ctx: DispatchContext, call_next: DispatchNext) -> Outcome:
        outcome = await call_next(ctx)
        if isinstance(outcome, Succeeded):
            nxt = next_step(ctx.envelope, outcome.value)
            if nxt is not None:
                await self.source.send(nxt)
        return outcome
