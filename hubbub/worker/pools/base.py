"""The pool seam: a pool turns a ``Job`` into an ``Outcome`` and never raises for anything
the task did. Only the worker loop talks to the broker; pools only execute."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

from hubbub.job import Crashed, Failed, Job, Outcome, Rejected, Succeeded, TimedOut

if TYPE_CHECKING:
    from hubbub.hub import Hub

__all__ = ["Crashed", "Failed", "Job", "Outcome", "Pool", "Rejected", "Succeeded", "TimedOut"]


class Pool(abc.ABC):
    """Runs up to ``concurrency`` jobs at once.

    Attributes:
        kind: the name users pass to ``--pool``.
        concurrency: how many jobs may run at the same time.
        hard_timeouts_exact: whether ``timeout`` is enforced by killing (process pools).
    """

    kind: ClassVar[str]
    hard_timeouts_exact: ClassVar[bool] = False

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency

    @abc.abstractmethod
    async def start(self, hub: Hub) -> None:
        """Prepare to run the hub's tasks (threads, processes)."""

    @abc.abstractmethod
    async def run(self, job: Job) -> Outcome:
        """Run one job; the worker never calls this with more than ``concurrency`` at once."""

    async def resize(self, concurrency: int) -> None:
        """Change how many jobs may run at once (autoscale). Pools that keep threads or
        processes per slot override this to add or retire them."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release resources; the worker has stopped sending jobs."""
