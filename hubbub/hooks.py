"""Hooks that run in the process that runs the task.

Middleware (``around_dispatch``) runs in the worker's main process, on its loop. What a task
needs around it (a Flask app context, a database session, a tracing span, a connection pool
opened once per process) belongs in the process that runs the task: a prefork, hybrid or
gevent child, or the worker itself for solo, threads and async. ``Hooks`` holds them; a hub
has one (``hub.hooks``), filled by ``@hub.on_process_start``, ``@hub.on_process_stop``,
``@hub.around_task``, ``@hub.before_task``, ``@hub.after_task`` and
``@hub.on_task_failure`` when the app module is imported, so every child that imports the
app has them.

What each may do:

- ``on_process_start`` hooks run once in each process before it takes a task, in the order
  they were registered; one that raises stops that process from serving (the worker's start
  fails with the hook's error). ``on_process_stop`` hooks run in reverse order when the
  process stops serving (not when it is killed); one that raises is logged.
- ``around_task`` factories get the task's ``TaskContext`` and return a context manager
  entered around the task (first registered outermost); for an ``async def`` task it may be
  an async context manager (``@contextlib.asynccontextmanager``: an async DB session), entered
  with ``async with`` on the task's loop. ``before_task`` callbacks run inside them, just
  before the task. One that raises fails that task with its error (retried as the
  task's own error would be), never the worker.
- ``after_task`` callbacks run after every task (success or failure); ``on_task_failure``
  callbacks get the exception of a task that raised (not for ``Retry`` or ``Reject``, which
  steer). One that raises is logged and ignored: the task's outcome stands.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, TypeAlias, TypeVar

from hubbub.context import TaskContext
from hubbub.errors import ConfigurationError, Reject, Retry

__all__ = ["AroundTask", "Hooks", "ProcessHook", "TaskCallback", "TaskFailureCallback"]

log = logging.getLogger("hubbub.hooks")

ProcessHook: TypeAlias = Callable[[], object]
AroundTask: TypeAlias = Callable[
    [TaskContext], AbstractContextManager[Any] | AbstractAsyncContextManager[Any]]
TaskCallback: TypeAlias = Callable[[TaskContext], object]
TaskFailureCallback: TypeAlias = Callable[[TaskContext, BaseException], object]

F = TypeVar("F", bound=Callable[..., Any])


def hook_name(fn: object) -> str:
    """``module.qualname`` of a hook, for messages."""
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"


def _plain(kind: str, fn: F) -> F:
    if not callable(fn):
        raise ConfigurationError(f"@hub.{kind} decorates a function, not {fn!r}")
    if inspect.iscoroutinefunction(fn):
        raise ConfigurationError(
            f"@hub.{kind} takes a plain function, not async def {hook_name(fn)}: it runs in "
            "sync tasks' threads too; for async setup, run it in an around_task or in the task")
    return fn


class Hooks:
    """What runs in each process that runs tasks, and around each task there."""

    def __init__(self) -> None:
        self.process_start: list[ProcessHook] = []
        self.process_stop: list[ProcessHook] = []
        self.around: list[AroundTask] = []
        self.before: list[TaskCallback] = []
        self.after: list[TaskCallback] = []
        self.failure: list[TaskFailureCallback] = []
        self._started = False

    def __bool__(self) -> bool:
        """True when anything runs around tasks (the hot path skips all of this otherwise)."""
        return bool(self.around or self.before or self.after or self.failure)

    # -- registering -------------------------------------------------------------------------

    def add(self, kind: str, fn: F) -> F:
        """Register ``fn`` as a hook of ``kind`` (the decorator's name on ``Hub``).

        Raises:
            ConfigurationError: ``fn`` is not a function, or is ``async def``.
        """
        lists: Mapping[str, list[Any]] = {
            "on_process_start": self.process_start, "on_process_stop": self.process_stop,
            "around_task": self.around, "before_task": self.before, "after_task": self.after,
            "on_task_failure": self.failure}
        target = lists[kind]
        _plain(kind, fn)
        if fn not in target:  # an app module imported twice registers once
            target.append(fn)
        return fn

    # -- the process -------------------------------------------------------------------------

    def start_process(self) -> None:
        """Run the ``on_process_start`` hooks (once until ``stop_process``).

        Raises:
            ConfigurationError: a hook raised; the message names it and its error.
        """
        if self._started:
            return
        for hook in self.process_start:
            try:
                hook()
            except Exception as exc:
                raise ConfigurationError(
                    f"on_process_start hook {hook_name(hook)} failed: {type(exc).__name__}: "
                    f"{exc}; this process runs no task without it") from exc
        self._started = True

    def stop_process(self) -> None:
        """Run the ``on_process_stop`` hooks, last registered first; errors are logged."""
        if not self._started:
            return
        self._started = False
        for hook in reversed(self.process_stop):
            try:
                hook()
            except Exception:
                log.exception("on_process_stop hook %s failed", hook_name(hook))

    # -- around a task -----------------------------------------------------------------------

    def call(self, ctx: TaskContext, fn: Callable[..., Any], args: tuple[Any, ...],
             kwargs: Mapping[str, Any]) -> Any:
        """``fn(*args, **kwargs)`` (a sync task) inside every hook."""
        with self._entered(ctx):
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                self._failed(ctx, exc)
                raise

    async def call_async(self, ctx: TaskContext, fn: Callable[..., Awaitable[Any]],
                         args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """``await fn(*args, **kwargs)`` (an ``async def`` task) inside every hook; an
        ``around_task`` hook may return an async context manager here."""
        async with contextlib.AsyncExitStack() as stack:
            for factory in self.around:
                manager = factory(ctx)
                if isinstance(manager, AbstractAsyncContextManager):
                    await stack.enter_async_context(manager)
                else:
                    stack.enter_context(_checked(factory, manager, ctx))
            self._begin(stack, ctx)
            try:
                return await fn(*args, **kwargs)
            except BaseException as exc:
                self._failed(ctx, exc)
                raise

    @contextlib.contextmanager
    def _entered(self, ctx: TaskContext) -> Any:
        with contextlib.ExitStack() as stack:
            for factory in self.around:
                stack.enter_context(_checked(factory, factory(ctx), ctx))
            stack.callback(self._after, ctx)  # inside the managers: they are still entered
            for callback in self.before:
                callback(ctx)
            yield

    def _begin(self, stack: contextlib.AsyncExitStack, ctx: TaskContext) -> None:
        stack.callback(self._after, ctx)  # inside the managers: they are still entered
        for callback in self.before:
            callback(ctx)

    def _after(self, ctx: TaskContext) -> None:
        for callback in self.after:
            try:
                callback(ctx)
            except Exception:
                log.exception("after_task hook %s failed for %s[%s]", hook_name(callback),
                              ctx.task, ctx.id)

    def _failed(self, ctx: TaskContext, exc: BaseException) -> None:
        if isinstance(exc, Retry | Reject):
            return
        for callback in self.failure:
            try:
                callback(ctx, exc)
            except Exception:
                log.exception("on_task_failure hook %s failed for %s[%s]",
                              hook_name(callback), ctx.task, ctx.id)


def _checked(factory: AroundTask, manager: object, ctx: TaskContext) -> Any:
    """``manager`` if it is a (sync) context manager, else a TypeError that says what to do."""
    if hasattr(manager, "__enter__") and hasattr(manager, "__exit__"):
        return manager
    if hasattr(manager, "__aenter__"):
        raise TypeError(
            f"around_task hook {hook_name(factory)} returned an async context manager, which "
            f"only async def tasks can enter, and {ctx.task} is a plain def task: return a "
            "sync context manager for it (ctx.task names the task)")
    raise TypeError(f"around_task hook {hook_name(factory)} returned {type(manager).__name__}, "
                    "not a context manager: decorate it with @contextlib.contextmanager")
