"""Results Celery can read: ``celery-task-meta-<id>`` in a Celery Redis result backend.

Celery's Redis backend keeps each task's state as one JSON object under
``celery-task-meta-<id>`` (``status``, ``result``, ``traceback``, ``children``,
``date_done``, ``task_id``), expiring after ``result_expires`` (a day by default), and
publishes the same JSON on a channel of that name, which ``AsyncResult.get()`` listens on.
A failure's ``result`` is ``{"exc_type", "exc_message", "exc_module"}``, from which Celery
rebuilds the exception (only ever an exception class, by its own check).

:class:`CeleryResultWriter` writes those; :class:`CeleryResultsMiddleware` writes the state of
every task a bridge lane runs, before hubbub acks it (hubbub's own result is written too).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hubbub._redis import RedisURL, translate
from hubbub.errors import ResultError, ResultUnavailable
from hubbub.middleware import DispatchContext, DispatchNext, Middleware
from hubbub.results.base import ErrorInfo, State
from hubbub.worker.settlement import settle

from ._common import Receipt
from .protocol import IGNORE_RESULT, failure_result, kombu_default

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from hubbub.hub import Hub
    from hubbub.job import Outcome

log = logging.getLogger("hubbub.celery")

DEFAULT_EXPIRES = 86400.0  # Celery's result_expires default: one day (as bridge.DEFAULT_EXPIRES)
KEY_PREFIX = "celery-task-meta-"


def meta(task_id: str, status: State, result: Any = None, traceback: str | None = None,
         *, group_id: str | None = None, parent_id: str | None = None) -> dict[str, Any]:
    """The JSON object Celery's Redis backend stores for ``task_id``."""
    ready = status in (State.SUCCESS, State.FAILURE, State.REVOKED)
    body: dict[str, Any] = {
        "status": status.value, "result": result, "traceback": traceback or None,
        "children": [], "date_done": datetime.now(UTC).isoformat() if ready else None,
        "task_id": task_id,
    }
    if group_id:
        body["group_id"] = group_id
    if parent_id:
        body["parent_id"] = parent_id
    return body


class CeleryResultWriter:
    """Writes task states where Celery's Redis result backend reads them.

    Args:
        url: the Celery result backend, ``redis://host:port/db`` (as Celery's
            ``result_backend``).
        expires: seconds a state is kept (Celery's ``result_expires``).

    Raises:
        ConfigurationError: not a redis URL.
    """

    def __init__(self, url: str, *, expires: float = DEFAULT_EXPIRES) -> None:
        self.url = RedisURL.parse(url)
        self.expires = expires
        self._client: aioredis.Redis | None = None

    def __repr__(self) -> str:
        return f"CeleryResultWriter({self.url})"

    async def connect(self) -> None:
        """Connect and check the server answers.

        Raises:
            ResultUnavailable: the backend cannot be reached.
        """
        self._client = self.url.client(name="hubbub-celery-results")
        with translate(self.url, ResultUnavailable, ResultError):
            await self._client.ping()

    async def close(self) -> None:
        """Close the connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def write(self, task_id: str, status: State, result: Any = None,
                    traceback: str | None = None, *, group_id: str | None = None,
                    parent_id: str | None = None, keep_done: bool = False) -> None:
        """Store one state and publish it to waiting ``AsyncResult.get()`` callers.

        A result JSON cannot hold is stored as a FAILURE saying so. With ``keep_done``, a
        SUCCESS or FAILURE already stored is left as it is (a late REVOKED must not hide
        the result of a run that finished).

        Raises:
            ResultUnavailable: the backend cannot be reached.
            ResultError: it refused the write.
        """
        if self._client is None:
            raise ResultError("the Celery result writer is not connected")
        try:
            data = json.dumps(meta(task_id, status, result, traceback, group_id=group_id,
                                   parent_id=parent_id), default=kombu_default,
                              allow_nan=False)
        except (TypeError, ValueError) as exc:
            error = ErrorInfo("EncodeError", f"the result cannot be stored as JSON: {exc}")
            data = json.dumps(meta(task_id, State.FAILURE, failure_result(error),
                                   group_id=group_id, parent_id=parent_id))
        key = KEY_PREFIX + task_id
        with translate(self.url, ResultUnavailable, ResultError):
            if keep_done and _done(await self._client.get(key)):
                return
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(key, data, ex=max(1, int(self.expires)))
                pipe.publish(key, data)
                await pipe.execute()

    async def write_failure(self, task_id: str, error: ErrorInfo) -> None:
        """Store a FAILURE for ``task_id``, never raising (a failed write is logged)."""
        try:
            await self.write(task_id, State.FAILURE, failure_result(error), error.traceback)
        except Exception as exc:
            log.error("could not write Celery's FAILURE for %s: %s", task_id, exc)


def _done(stored: bytes | str | None) -> bool:
    """True when a stored Celery state is SUCCESS or FAILURE."""
    if stored is None:
        return False
    try:
        status = json.loads(stored).get("status")
    except (ValueError, AttributeError):
        return False
    return status in (State.SUCCESS.value, State.FAILURE.value)


class CeleryResultsMiddleware(Middleware):
    """Writes the Celery state of each task a bridge lane runs, before it is acked.

    The state is what hubbub decides for the outcome (SUCCESS, RETRY, FAILURE, REVOKED),
    so a Celery caller sees a retry as RETRY and only the last failure as FAILURE. A write
    that fails is logged; the task's hubbub result and ack go ahead.
    """

    def __init__(self, hub: Hub, writer: CeleryResultWriter) -> None:
        self.hub = hub
        self.writer = writer

    async def around_dispatch(self, ctx: DispatchContext, call_next: DispatchNext) -> Outcome:
        receipt = ctx.delivery.receipt
        if isinstance(receipt, Receipt):  # it ran (so it is not reported as expired)
            receipt.ran = True
        outcome = await call_next(ctx)
        env = ctx.envelope
        task = self.hub.tasks.get(env.task)
        if task is None or env.headers.get(IGNORE_RESULT):  # Celery's ignore_result=True
            return outcome
        verdict = settle(env, task.spec, outcome, time.time(), queue=ctx.delivery.queue)
        if verdict.state is State.SUCCESS:
            result, traceback = verdict.value, None
        else:
            error = verdict.error or ErrorInfo("Exception", "unknown error")
            result, traceback = failure_result(error), error.traceback
        try:
            await self.writer.write(env.id, verdict.state, result, traceback,
                                    group_id=env.group_id, parent_id=env.parent_id)
        except Exception as exc:
            log.error("could not write Celery's result of %s[%s]: %s", env.task, env.id, exc)
        return outcome
