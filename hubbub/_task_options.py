"""A task's options (``TaskOptions``) and the names it goes by: what ``@hub.task(...)`` takes
and checks once, when the task is declared."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hubbub._suggest import did_you_mean
from hubbub.errors import ConfigurationError
from hubbub.limits.keys import KeyFrom
from hubbub.limits.options import check_limit_options
from hubbub.settings import seconds


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How a task is sent and run. Every field can be given to ``@hub.task(...)``.

    Attributes:
        name: the name workers know it by (default: ``module.function``).
        queue: where it is sent (default: the hub's default queue).
        priority: 0..9, higher runs first.
        retries: how many times it may be retried after the first attempt.
        retry_backoff: first retry delay in seconds; doubles each retry (with jitter).
        retry_backoff_max: the longest retry delay.
        retry_jitter: randomise each delay between half and all of it.
        retry_for: exception types that are retried (default: any Exception, while
            ``retries`` allow).
        timeout: hard time limit in seconds (exact on process pools, best effort elsewhere).
        soft_timeout: seconds after which SoftTimeLimitExceeded is raised inside the task.
        expires: seconds after sending when the task is no longer worth running.
        ignore_result: keep no result (faster; Result.get() is then refused).
        on_crash: when the process running it dies: "fail" it, or "retry" it.
        raises: the app's exception classes the task may raise that callers want to catch:
            ``Result.get()`` then raises a ``TaskFailed`` that is also an instance of the one
            raised (builtin exceptions such as ValueError need no declaring).
        unique: makes a job unique by a key derived from its arguments: parameter names
            (``unique=("order_id",)``) or a function of the task's arguments returning a str.
            While a job with that key is queued or running, sending another returns its
            Result. Needs a result store. See docs/limits.md.
        unique_for: seconds a unique key is kept at most (default one hour).
        rate_limit: ``"100/m"`` (also ``/s``, ``/h``): starts allowed across the whole fleet,
            spread evenly; a task over it waits without a pool slot.
        rate_limit_key: makes ``rate_limit`` per key, derived from the arguments like
            ``unique`` (e.g. ``"10/s"`` for each customer).
        concurrency: at most this many running at once across the whole fleet.
        concurrency_key: makes ``concurrency`` per key, derived from the arguments like
            ``unique`` (e.g. per customer).
    """

    name: str
    queue: str | None = None
    priority: int = 0
    retries: int = 0
    retry_backoff: float = 1.0
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    retry_for: tuple[type[BaseException], ...] = ()
    timeout: float | None = None
    soft_timeout: float | None = None
    expires: float | None = None
    ignore_result: bool = False
    on_crash: Literal["fail", "retry"] = "fail"
    raises: tuple[type[Exception], ...] = ()
    # -- limits (hubbub.limits) --
    unique: KeyFrom | None = None
    unique_for: float | None = None
    rate_limit: str | None = None
    concurrency: int | None = None
    concurrency_key: KeyFrom | None = None
    rate_limit_key: KeyFrom | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= 9:
            raise ConfigurationError(f"priority must be 0..9, got {self.priority}")
        if self.retries < 0:
            raise ConfigurationError(f"retries must not be negative, got {self.retries}")
        for name in ("timeout", "soft_timeout", "expires", "retry_backoff", "retry_backoff_max"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, seconds(value, name))
        if (self.soft_timeout is not None and self.timeout is not None
                and self.soft_timeout >= self.timeout):
            raise ConfigurationError(
                f"soft_timeout ({self.soft_timeout}s) must be shorter than timeout "
                f"({self.timeout}s): the soft limit warns the task before the hard one stops it"
            )
        if self.on_crash not in ("fail", "retry"):
            raise ConfigurationError(f"on_crash must be 'fail' or 'retry', not {self.on_crash!r}")
        raises = self.raises if isinstance(self.raises, tuple | list) else (self.raises,)
        for cls in raises:
            if not (isinstance(cls, type) and issubclass(cls, Exception)):
                raise ConfigurationError(f"raises takes Exception subclasses, e.g. "
                                         f"raises=(OrderError,), not {cls!r}")
        object.__setattr__(self, "raises", tuple(raises))
        # -- limits --
        for name, value in check_limit_options(
                unique=self.unique, unique_for=self.unique_for, rate_limit=self.rate_limit,
                concurrency=self.concurrency, concurrency_key=self.concurrency_key,
                rate_limit_key=self.rate_limit_key).items():
            object.__setattr__(self, name, value)


# Celery's task options, and what to write instead: a team moving over gets the answer, not
# a bare "unknown option".
CELERY_OPTIONS = {
    "bind": "hubbub tasks take no self: call hubbub.current_task() inside the task for its "
            "id, retries and queue",
    "max_retries": "hubbub calls it retries",
    "autoretry_for": "hubbub calls it retry_for (with retries=N); it defaults to any Exception",
    "time_limit": "hubbub calls it timeout (seconds)",
    "soft_time_limit": "hubbub calls it soft_timeout (seconds)",
    "acks_late": "it is always on in hubbub: a message is acked only after its task finished",
    "track_started": "it is always on in hubbub: a task is recorded STARTED when it starts",
    "default_retry_delay": "hubbub calls it retry_backoff (seconds, doubled each retry)",
    "serializer": "the serializer is a Hub setting: Hub(serializer=...)",
}


def unknown_option(name: str, known: Iterable[str]) -> ConfigurationError:
    """The error for an unknown task option: Celery's names get what hubbub calls them."""
    hint = CELERY_OPTIONS.get(name)
    if hint:
        return ConfigurationError(f"unknown task option {name!r}: that is Celery's; {hint}")
    return ConfigurationError(f"unknown task option {name!r}{did_you_mean(name, known)}")


def module_name(module: str) -> str:
    """The name workers know a module by. A script run as ``python shop.py`` is
    ``__main__`` to itself but ``shop`` to a worker started with ``-A shop:hub``: use the
    latter."""
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)  # python -m package.module
    path = getattr(main, "__file__", None)
    return Path(path).stem if path else module


def declared_name(cls: type[BaseException]) -> str:
    """``shop.OrderError``: the name a declared exception class is recorded under (the
    same in the caller's process and in the worker's)."""
    return f"{module_name(cls.__module__)}.{cls.__qualname__}"
