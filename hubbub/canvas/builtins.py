"""The one task hubbub registers itself: ``hubbub.starmap``, which ``task.map``,
``task.starmap`` and ``task.chunks`` send (many calls of one task in one message)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from hubbub._registry import register_task
from hubbub.task import Publisher, Task

STARMAP = "hubbub.starmap"


def add_builtins(hub: Publisher, tasks: MutableMapping[str, Task[Any, Any]]) -> None:
    """Register ``hubbub.starmap`` on ``hub`` (once; a worker of the app then knows it)."""
    if STARMAP in tasks:
        return

    def starmap(task: str, calls: list[list[Any]]) -> list[Any]:
        """Call task ``task``'s function once per argument list, here, in order."""
        target = tasks.get(task)
        if target is None:
            raise LookupError(f"task {task!r} is not registered on this worker; "
                              "map/starmap/chunks run it in the worker's process")
        if target.is_async:
            raise TypeError(f"task {task!r} is async; map/starmap/chunks take sync tasks: "
                            "use group(task.s(x) for x in items) instead")
        return [target.fn(*call) for call in calls]

    register_task(hub, tasks, starmap, {"name": STARMAP})
