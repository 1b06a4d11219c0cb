"""How a ``Hub`` names and registers its tasks, and finds one a schedule misspelt.

``Hub.task``, ``Hub.periodic`` and ``Hub.schedule`` are the API; these are their steps, kept
apart so that ``hub.py`` reads as the list of what a hub offers.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, MutableMapping
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from hubbub._suggest import did_you_mean
from hubbub.errors import ConfigurationError, ScheduleError
from hubbub.task import Publisher, Task, TaskOptions, module_name, unknown_option

P = ParamSpec("P")
R = TypeVar("R")


class TaskDecorator(Protocol):
    """What ``@hub.task(...)`` and ``@hub.periodic(...)`` return: a function -> a Task."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


def register_task(hub: Publisher, tasks: MutableMapping[str, Task[Any, Any]],
                  func: Callable[..., Any], options: dict[str, Any]) -> Task[Any, Any]:
    """``func`` as a task of ``hub``, added to ``tasks`` under its name.

    The name is ``options["name"]`` (popped), else ``module.QualName`` of ``func``, the module
    as workers import it. Registering the same function again is allowed (a module imported
    twice).

    Raises:
        ConfigurationError: an unknown or invalid option, or a name taken by another function.
    """
    name = options.pop("name", None) or f"{module_name(func.__module__)}.{func.__qualname__}"
    known = set(TaskOptions.__dataclass_fields__) - {"name"}
    for option in sorted(set(options) - known):
        raise unknown_option(option, known)
    existing = tasks.get(name)
    if existing is not None and existing.fn is not func:
        raise ConfigurationError(f"task name {name!r} is already registered")
    task: Task[Any, Any] = Task(hub, func, TaskOptions(name=name, **options))
    tasks[name] = task
    return task


def unknown_task(tasks: Mapping[str, Any], name: str) -> ScheduleError:
    """The error for scheduling ``name`` when no task of that name is registered, with the
    closest registered name."""
    return ScheduleError(
        f"cannot schedule {name!r}: no task of that name is registered on this hub"
        f"{_closest(tasks, name)}; register it first (or pass the task object), or "
        "pass remote=True if only workers elsewhere know it")


def _closest(tasks: Mapping[str, Any], name: str) -> str:
    """`` (did you mean 'shop.cleanup'?)`` for a bare or misspelt task name; '' for none."""
    short = [t for t in tasks if t.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]]
    if len(short) == 1:  # "cleanup" for "shop.cleanup": the module was left out
        return f" (did you mean {short[0]!r}?)"
    return did_you_mean(name, tasks)


def remote(*args: Any, **kwargs: Any) -> Any:
    """The function of a task known here only by name (``Hub.send_task``)."""
    raise ConfigurationError("this task is only known by name here; it runs on a worker")
