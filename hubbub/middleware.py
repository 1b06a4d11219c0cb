"""Middleware wraps publishing and dispatching, in list order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from hubbub.job import Job, Outcome
from hubbub.message import Envelope
from hubbub.transports.base import Delivery


@dataclass(frozen=True, slots=True)
class DispatchContext:
    """What middleware sees around one task run."""

    envelope: Envelope
    delivery: Delivery
    job: Job
    worker: str


PublishNext: TypeAlias = Callable[[Envelope], Awaitable[None]]
DispatchNext: TypeAlias = Callable[[DispatchContext], Awaitable[Outcome]]


class Middleware:
    """Override either hook; the defaults pass through."""

    async def around_publish(self, envelope: Envelope, call_next: PublishNext) -> None:
        """Runs in the producer around sending one envelope, before it is encoded: call
        ``await call_next(envelope)`` to send it (a changed copy may be passed on)."""
        await call_next(envelope)

    async def around_dispatch(self, ctx: DispatchContext, call_next: DispatchNext) -> Outcome:
        """Runs on the worker's event loop around handing one task to the pool: return
        ``await call_next(ctx)``, the task's outcome (or an outcome of your own)."""
        return await call_next(ctx)


def chain_dispatch(middleware: Sequence[Middleware], last: DispatchNext) -> DispatchNext:
    """One callable that runs every ``around_dispatch`` (first listed outermost), then ``last``."""
    call = last
    for mw in reversed(middleware):
        call = _bind_dispatch(mw, call)
    return call


def _bind_dispatch(mw: Middleware, call_next: DispatchNext) -> DispatchNext:
    async def call(ctx: DispatchContext) -> Outcome:
        return await mw.around_dispatch(ctx, call_next)

    return call


def chain_publish(middleware: Sequence[Middleware], last: PublishNext) -> PublishNext:
    """One callable that runs every ``around_publish`` (first listed outermost), then ``last``."""
    call = last
    for mw in reversed(middleware):
        call = _bind_publish(mw, call)
    return call


def _bind_publish(mw: Middleware, call_next: PublishNext) -> PublishNext:
    async def call(envelope: Envelope) -> None:
        await mw.around_publish(envelope, call_next)

    return call
