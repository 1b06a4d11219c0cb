"""``Task.apply``: run a task here and now, the way a worker would, and keep its result.

The task runs in the caller's process through the same runner every pool uses
(:func:`~hubbub.worker.execute.run_sync`): a real ``TaskContext`` (``current_task()``
works), the hub's ``around_task``/``before_task``/``after_task``/``on_task_failure`` hooks,
``Retry``/``Reject``/``retry_for`` and the check that the return value can be stored. A
failed attempt that may be retried is retried at once, inline (the countdown is not waited
for), as :func:`~hubbub.worker.settlement.settle` decides for a worker. Nothing is sent to
the broker or written to the result store: the result lives in the returned
:class:`EagerResult`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast, overload

from hubbub._tagging import pack, unpack
from hubbub.codecs import json_dumps, json_loads
from hubbub.errors import ResultError, TaskError
from hubbub.job import Job, Outcome, Succeeded
from hubbub.result import Result, ResultsClient
from hubbub.results.base import ResultRecord, State
from hubbub.task import SendOptions, Task, build_envelope
from hubbub.worker.execute import run_sync
from hubbub.worker.settlement import settle

if TYPE_CHECKING:
    from hubbub.message import Envelope

R = TypeVar("R")

EAGER_WORKER = "eager"  # the ``worker`` of an eager result's record


class EagerResult(Result[R], Generic[R]):
    """The finished result of ``Task.apply``: ``get``, ``state``, ``result``, ``traceback``
    and the rest of :class:`~hubbub.result.Result`, answered from memory, never waiting.

    Args:
        task: the task that ran.
        record: what it ended with.
    """

    __slots__ = ("_record",)

    def __init__(self, task: Task[Any, R], record: ResultRecord) -> None:
        super().__init__(cast("ResultsClient", None), record.id, task.name,
                         raises=task.spec.raises)
        self._record = record

    def __repr__(self) -> str:
        return f"<EagerResult {self.task}[{self.id}] {self._record.state.value}>"

    def record(self) -> ResultRecord:
        """The record the task ended with."""
        return self._record

    @overload
    def get(self, timeout: float | None = None, *, propagate: Literal[True] = True) -> R: ...

    @overload
    def get(self, timeout: float | None = None, *,
            propagate: Literal[False]) -> R | TaskError: ...

    @overload
    def get(self, timeout: float | None = None, *, propagate: bool) -> R | TaskError: ...

    def get(self, timeout: float | None = None, *, propagate: bool = True) -> R | TaskError:
        """The value, at once (``timeout`` is accepted for symmetry and ignored).

        Raises:
            TaskFailed: the task failed (also an instance of a builtin or declared exception
                class, as ``Result.get`` raises it).
        """
        return self._unwrap(self._record, timeout, propagate)

    @overload
    async def wait(self, timeout: float | None = None, *,
                   propagate: Literal[True] = True) -> R: ...

    @overload
    async def wait(self, timeout: float | None = None, *,
                   propagate: Literal[False]) -> R | TaskError: ...

    @overload
    async def wait(self, timeout: float | None = None, *,
                   propagate: bool) -> R | TaskError: ...

    async def wait(self, timeout: float | None = None, *,
                   propagate: bool = True) -> R | TaskError:
        """``get`` for async code."""
        return self._unwrap(self._record, timeout, propagate)

    def revoke(self, *, terminate: bool = False) -> bool:
        """An eager task has finished: nothing to revoke (always False)."""
        return False

    def forget(self) -> None:
        """Raises ResultError: an eager result is not stored anywhere."""
        raise ResultError("an eager result (Task.apply) is not stored; nothing to forget")


def apply(task: Task[Any, R], args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
          *, task_id: str | None = None, headers: Mapping[str, Any] | None = None,
          ) -> EagerResult[R]:
    """Run ``task`` in this process, retries included; see :meth:`hubbub.Task.apply`."""
    args = tuple(args)
    kwargs = dict(kwargs or {})
    task.check_arguments(args, kwargs)
    envelope = build_envelope(task.spec, task.hub.settings.default_queue, args, kwargs,
                              SendOptions(task_id=task_id, headers=headers))
    created = started = time.time()
    while True:
        outcome = _run(task, envelope)
        verdict = settle(envelope, task.spec, outcome, time.time(), queue=envelope.queue)
        if verdict.state != State.RETRY or verdict.retry is None:
            break
        envelope = verdict.retry
    value = verdict.value
    if isinstance(outcome, Succeeded) and not task.spec.ignore_result:
        value = unpack(json_loads(json_dumps(pack(value))))  # as a worker's result reads back
    record = ResultRecord(envelope.id, verdict.state, task=task.name, value=value,
                          error=verdict.error, retries=envelope.retries, worker=EAGER_WORKER,
                          created_at=created, started_at=started, finished_at=time.time())
    return EagerResult(task, record)


def _run(task: Task[Any, Any], envelope: Envelope) -> Outcome:
    job = Job.from_envelope(envelope)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_sync(task, job)
    # Called from a coroutine: an ``async def`` task needs a loop of its own, which this
    # thread cannot start while its loop runs. The caller's loop waits meanwhile, as it would
    # for any sync call.
    with ThreadPoolExecutor(1, thread_name_prefix="hubbub-apply") as executor:
        return executor.submit(run_sync, task, job).result()
