"""The pool seam: a pool turns a ``Job`` into an ``Outcome`` and never raises for anything
the task did. Only the worker loop talks to the broker; pools only execute."""

from __future__ import annotations

import abc
import asyncio
from typing import TYPE_CHECKING, ClassVar

from hubbub.errors import ConfigurationError
from hubbub.job import Crashed, Failed, Job, Outcome, Rejected, Succeeded, Terminated, TimedOut

if TYPE_CHECKING:
    from hubbub.hub import Hub

__all__ = ["Crashed", "Failed", "Job", "Outcome", "Pool", "Rejected", "Succeeded", "Terminated",
           "TimedOut"]


class Pool(abc.ABC):
    """Runs up to ``concurrency`` jobs at once.

    Attributes:
        kind: the name users pass to ``--pool``.
        summary: what the pool runs and what for, in a few words; ``hubbub worker --help``
            lists it under ``--pool``.
        resizable: whether ``resize`` works, so that the pool can autoscale.
        concurrency: how many jobs may run at the same time.
        hard_timeouts_exact: whether ``timeout`` is enforced by killing (process pools).
        in_process: whether tasks run in the worker's own process (the worker then runs the
            hub's ``on_process_start``/``on_process_stop`` hooks; child processes run their own).
    """

    kind: ClassVar[str]
    summary: ClassVar[str]
    resizable: ClassVar[bool] = False
    hard_timeouts_exact: ClassVar[bool] = False
    in_process: ClassVar[bool] = True

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency

    @property
    def window(self) -> int:
        """How many more jobs the pool takes now beyond ``concurrency``, queued where they
        will run so that a short task never waits for the worker's next hand-out (prefork's
        children, while their tasks are short); 0 for most pools. The worker hands a pool up
        to ``concurrency + window`` jobs; ``run`` of a queued one returns once it has run."""
        return 0

    @abc.abstractmethod
    async def start(self, hub: Hub) -> None:
        """Prepare to run the hub's tasks (threads, processes)."""

    @abc.abstractmethod
    async def run(self, job: Job) -> Outcome:
        """Run one job; the worker never calls this with more than ``concurrency`` at once."""

    def submit(self, job: Job) -> asyncio.Future[Outcome] | None:
        """Start ``job`` now, if the pool can take it at once, without the caller awaiting
        ``run``: the future resolves with what ``run`` would have returned (cancelling it
        gives up on the outcome, as cancelling ``run`` does). The worker uses it to hand out
        short tasks without a task object of its own for each (the process pools, the
        threads and async pools).

        Returns:
            The job's future; None when the pool has no room at once, or no such path (the
            default): the caller then awaits ``run``.
        """
        return None

    async def resize(self, concurrency: int) -> None:
        """Change how many jobs may run at once (autoscale).

        A pool that can resize sets ``resizable`` and overrides this to add or retire its
        threads or processes, calling it first.

        Raises:
            ConfigurationError: the pool is not ``resizable``.
            ValueError: ``concurrency`` below 1.
        """
        if not self.resizable:
            raise ConfigurationError(f"the {self.kind} pool cannot resize, so it cannot "
                                     "autoscale")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency

    async def cancel(self, job_id: str, reason: str) -> bool:
        """Stop the running job ``job_id`` (revoked with ``terminate=True``).

        A pool that can stop a running task overrides this; ``run`` then returns
        ``Terminated(reason, ...)`` for that job. How each pool stops one is in docs/pools.md.

        Returns:
            True if the job was running here and is being stopped; False otherwise (this
            pool cannot stop a running task, or the job is not running here).
        """
        return False

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release resources; the worker has stopped sending jobs."""
