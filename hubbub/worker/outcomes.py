"""``Outcomes``: turns admission refusals and settlement verdicts into buffered writes.

The rules live in :mod:`~hubbub.worker.settlement` (pure); this module applies them: result
records, acks, retries and dead letters queued on the :class:`WriteBuffer`, events emitted
and log lines written, each bounded, so a task's giant error cannot flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hubbub._redact import redact
from hubbub.codecs import BY_CONTENT_TYPE
from hubbub.errors import ErrorKind, MessageError
from hubbub.events import TaskAttemptFailed, TaskDeadLettered, TaskRevoked, TaskSucceeded
from hubbub.job import Succeeded
from hubbub.limits.unique import unique_key
from hubbub.logs import task_fields
from hubbub.message import encode
from hubbub.results.base import READY_STATES, ErrorInfo, ResultRecord, State
from hubbub.transports.base import Delivery, Outgoing
from hubbub.worker.execute import exception_text
from hubbub.worker.followups import FollowUps
from hubbub.worker.history import attempt_of, note_of
from hubbub.worker.settlement import Verdict, settle, unretryable
from hubbub.worker.writes import RetryWrite, WriteBuffer

if TYPE_CHECKING:
    from hubbub.hub import Hub
    from hubbub.job import Outcome
    from hubbub.message import Envelope
    from hubbub.worker.admission import Refused
    from hubbub.worker.held import Held

log = logging.getLogger("hubbub.worker")


class Outcomes:
    """Writes what happened to each delivery.

    Args:
        hub: for settings, the signer and the event bus.
        worker: this worker's name, recorded with each result.
        writes: the buffer that writes everything.
        max_size: the largest body a retry may have (the hub's limit within the broker's).
    """

    def __init__(self, hub: Hub, worker: str, writes: WriteBuffer, max_size: int) -> None:
        self.hub = hub
        self.worker = worker
        self.writes = writes
        self.max_size = max_size
        self.failed = 0  # tasks that ran and ended in FAILURE (the worker registry shows it)
        # -- limits: told (unique key, job id) when a unique job reaches a final state, to
        # give its key back at once --
        self.unclaim: Callable[[str, str], None] | None = None
        self.followups = FollowUps(hub, max_size)  # -- canvas

    def refused(self, delivery: Delivery, refused: Refused) -> None:
        """Dead-letter what admission refused; record a FAILURE for an id it trusts.

        -- canvas: a refused step of a workflow has failed for good. When its envelope was
        decoded, what follows it fails as after any failure (records of the steps that never
        run, error callbacks, its chord); the write buffer publishes those before it writes
        the dead letter.
        """
        log.error("dead-lettered message %r from queue %s: %s", refused.task_id or delivery.id,
                  delivery.queue, short(refused.reason))
        if refused.envelope is not None:
            self._follow_failure(refused.envelope,
                                 f"{ErrorKind.MESSAGE}: dead-lettered: {refused.reason}")
        if refused.unique is not None and self.unclaim is not None:  # -- limits --
            self.unclaim(*refused.unique)
        self.writes.dead_letter(delivery, refused.reason)
        if refused.task_id is not None and self.hub.settings.results is not None:
            self.writes.record(ResultRecord(
                refused.task_id, State.FAILURE, task=refused.task,
                error=ErrorInfo(ErrorKind.MESSAGE, refused.reason), worker=self.worker,
                finished_at=time.time()))
        self.hub.events.emit(TaskDeadLettered(refused.task_id, delivery.queue, refused.reason,
                                              self.worker))

    def expired(self, held: Held) -> None:
        env = held.envelope
        assert env.expires is not None
        log.info("task %s[%s] expired; skipped", env.task, env.id)
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(env.expires))
        self.record(held, State.REVOKED,
                    error=ErrorInfo(ErrorKind.REVOKED, f"expired before it ran ({at} UTC)"))
        self._follow_failure(env, f"{ErrorKind.REVOKED}: expired before it ran ({at} UTC)")
        self.writes.ack([held.delivery])
        self.hub.events.emit(TaskRevoked(env.id, env.task, self.worker,
                                         f"expired before it ran ({at} UTC)"))

    def skipped(self, env: Envelope) -> None:
        """A job revoked while it waited for a slot was dropped unstarted: it is settled
        (its unique key back) and, in a workflow, what follows it never runs."""
        self.settle_unique(env)
        if env.canvas:
            self.revoked_step(env)

    def revoked_step(self, env: Envelope) -> None:
        """-- canvas: a revoked task of a workflow was skipped: what follows it never runs."""
        self._follow_failure(env, f"{ErrorKind.REVOKED}: revoked before it ran")

    def finished(self, held: Held, outcome: Outcome) -> None:
        """Settle a finished task; a bug here costs this delivery at most, never the worker."""
        try:
            if isinstance(outcome, Succeeded):
                # settle's verdict on a success is SUCCESS with its value, always: applied
                # without building one (every task that succeeds comes here), so _apply
                # never sees a SUCCESS.
                self._succeeded(held, outcome.value, outcome.duration)
                return
            verdict = settle(held.envelope, held.task.spec, outcome, time.time(),
                             queue=held.delivery.queue,
                             dead_letter_failures=self._dead_failures(held))
            self._apply(held, verdict, outcome.duration)
        except Exception as exc:
            log.exception("settling %s[%s] failed", held.envelope.task, held.envelope.id)
            error = ErrorInfo(ErrorKind.NOT_STORABLE,
                              f"its outcome cannot be settled: {exception_text(exc)}")
            reason = f"{error.type}: {error.message}"
            self._apply(held, Verdict(State.FAILURE, error=error, reason=reason,
                                      dead_reason=reason), 0.0)

    def _apply(self, held: Held, verdict: Verdict, duration: float) -> None:
        env = held.envelope
        if verdict.state == State.REVOKED:
            log.warning("task %s[%s] terminated after %.3fs: %s", env.task, env.id, duration,
                        short(verdict.summary), extra=task_fields(env.id, env.task))
            self.record(held, State.REVOKED, error=verdict.error)
            self._follow_failure(env, verdict.summary)
            self.writes.ack([held.delivery])
            self.hub.events.emit(TaskRevoked(env.id, env.task, self.worker,
                                             short(verdict.summary)))
            return
        if verdict.retry is not None:
            try:
                body = encode(verdict.retry, BY_CONTENT_TYPE[env.content_type], self.max_size,
                              self.hub.signer)
            except MessageError as exc:
                verdict = unretryable(verdict, str(exc),
                                      dead_letter_failures=self._dead_failures(held))
        self.hub.events.emit(TaskAttemptFailed(env.id, env.task, duration, self.worker,
                                        verdict.summary, verdict.retry is not None))
        if verdict.retry is not None:
            log.warning("task %s[%s] failed in %.3fs (%s); retry %d/%d in %.1fs", env.task,
                        env.id, duration, short(verdict.summary), env.retries + 1,
                        env.max_retries, verdict.countdown, extra=task_fields(env.id, env.task))
            self.record(held, State.RETRY, error=verdict.error, delay=verdict.countdown)
            outgoing = Outgoing(held.delivery.queue, body, env.id, env.priority,
                                verdict.retry.eta)
            retried = verdict
            self.writes.retry(RetryWrite(
                outgoing, held.delivery, lambda reason: self._retry_refused(held, retried,
                                                                            reason),
                dead_letter=self._dead_failures(held)))
            return
        log.error("task %s[%s] failed in %.3fs: %s", env.task, env.id, duration,
                  short(verdict.reason or verdict.summary), extra=task_fields(env.id, env.task))
        self.failed += 1
        self.record(held, State.FAILURE, error=verdict.error)
        self._follow_failure(env, verdict.summary)
        if verdict.dead_reason is not None:
            self.writes.dead_letter(held.delivery, verdict.dead_reason)
            # Reject(), or failures dead-lettered on request: a dead letter like any other
            # (events, metrics), beside the failed attempt above.
            self.hub.events.emit(TaskDeadLettered(env.id, held.delivery.queue,
                                                  verdict.dead_reason, self.worker))
        else:
            self.writes.ack([held.delivery])

    def _succeeded(self, held: Held, value: Any, duration: float) -> None:
        """``held`` succeeded with ``value``: its follow-ups, record and ack. The common case,
        once per task: no log record and no event object made for nobody (at the worker's
        default level INFO, the line is written)."""
        env = held.envelope
        if log.isEnabledFor(logging.INFO):
            log.info("task %s[%s] succeeded in %.3fs", env.task, env.id, duration,
                     extra=task_fields(env.id, env.task))
        if env.canvas:  # -- canvas: the next steps go out before this record and ack
            self._follow_success(env, value)
        self.record(held, State.SUCCESS, value=value)
        self.writes.ack([held.delivery])
        bus = self.hub.events
        if bus.listening_besides(None):
            bus.emit(TaskSucceeded(env.id, env.task, duration, self.worker))

    def _retry_refused(self, held: Held, retried: Verdict, reason: str
                       ) -> ResultRecord | None:
        """The broker refused ``held``'s retry for good: the task failed; its FAILURE record
        (and its unique key back)."""
        self.settle_unique(held.envelope)
        return self.make(held, State.FAILURE, error=unretryable(retried, reason).error)

    def _follow_success(self, env: Envelope, value: Any) -> None:
        """-- canvas: the next steps, callbacks and chord join of a task that succeeded."""
        try:
            follow = self.followups.succeeded(env, value)
        except Exception as exc:  # a step the sender built wrong: say so where it stops
            log.exception("the follow-ups of %s[%s] cannot be built", env.task, env.id)
            self._follow_failure(env, f"its follow-ups cannot be built: {exception_text(exc)}")
            return
        if follow is not None:
            self.writes.follow_up(follow)

    def _follow_failure(self, env: Envelope, summary: str) -> None:
        """-- canvas: error callbacks, and FAILURE records of the steps that never run."""
        if not env.canvas:
            return
        try:
            follow, records = self.followups.failed(env, summary)
        except Exception:  # never let a workflow's shape stop the worker
            log.exception("the error callbacks of %s[%s] cannot be built", env.task, env.id)
            return
        if self.hub.settings.results is not None:
            for record in records:
                self.writes.record(record)
        if follow is not None:
            self.writes.follow_up(follow)

    def _dead_failures(self, held: Held) -> bool:
        """Whether a failure of ``held`` goes to dead letters too: when asked, or when its
        task keeps no result (nothing else would keep the failure)."""
        return (self.hub.settings.dead_letter_failures or held.task.spec.ignore_result
                or self.hub.settings.results is None)

    def progress(self, held: Held, status: str, meta: dict[str, Any] | None) -> None:
        """The running task reported ``status`` (``update_state``): a STARTED record that
        says so. Records wait in the write buffer by id, so a burst of updates is written
        once, as its latest."""
        self.record(held, State.STARTED, status=status, meta=meta)

    def record(self, held: Held, state: State, *, value: Any = None,
               error: ErrorInfo | None = None, status: str | None = None,
               meta: dict[str, Any] | None = None, delay: float | None = None) -> None:
        if state in READY_STATES:  # -- limits --
            self.settle_unique(held.envelope)
        record = self.make(held, state, value=value, error=error, status=status, meta=meta,
                           delay=delay)
        if record is not None:
            self.writes.record(record)

    def settle_unique(self, envelope: Envelope) -> None:
        """-- limits: ``envelope``'s job is settled: its unique key (if any) is given back."""
        key = unique_key(envelope)
        if key is not None and self.unclaim is not None:
            self.unclaim(key, envelope.id)

    def make(self, held: Held, state: State, *, value: Any = None,
             error: ErrorInfo | None = None, status: str | None = None,
             meta: dict[str, Any] | None = None, delay: float | None = None
             ) -> ResultRecord | None:
        """The record of ``held`` in ``state``, or None when its task keeps no result.

        -- history: with the task's note and, once it ran, the attempt this record ends
        (``delay``: seconds until the next one, for RETRY), unless history is off.
        """
        if held.task.spec.ignore_result or self.hub.settings.results is None:
            return None
        env = held.envelope
        now = time.time()
        note = attempt = None
        if self.hub.settings.history:
            if held.note is None:
                held.note = note_of(env, held.delivery.queue, held.task.fn)
            note = held.note
            if held.started_at is not None:
                attempt = attempt_of(env, state, self.worker, now, error, delay)
        return ResultRecord(env.id, state, env.task, value, error, env.retries, self.worker,
                            env.created_at, held.started_at,
                            now if state in READY_STATES else None, status, meta, note, attempt)


def short(text: str | None, limit: int = 1000) -> str:
    """Log text cut to ``limit`` characters, secrets in URLs masked: the full text is in the
    result store."""
    text = text or ""
    if len(text) <= limit:
        return redact(text)
    # Mask a little more than is shown, so that a URL cut at the limit is masked whole.
    return f"{redact(text[:limit + 200])[:limit]}... ({len(text) - limit} more)"
