"""Logging for tasks and workers: task fields on every record, text or JSON lines.

Inside a task, ``current_task()`` is known in the thread or coroutine that runs it, on every
pool (the worker's process or a child's). :class:`TaskFilter` copies it onto log records as
``task_id`` and ``task_name`` (``None`` outside a task) and ``task_label`` (`` shop.add[6f1c...]``
or ``""``), so that any logger's records carry them once the filter is on the handler;
:func:`get_task_logger` is a logger with the filter on itself, for apps that configure
logging their own way.

``hubbub worker --log-format json --logfile PATH`` calls :func:`configure`, and the worker's
child processes call it again with the same setup (the pool passes it in their
``ChildSpec``), so every process writes the same kind of line to the same place.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, NamedTuple

from hubbub.context import maybe_current_task
from hubbub.errors import ConfigurationError

__all__ = ["FORMATS", "JsonFormatter", "LogSetup", "TaskFilter", "configure", "current_setup",
           "get_task_logger", "task_fields"]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(task_label)s: %(message)s"
CHILD_TEXT_FORMAT = ("%(asctime)s %(levelname)-7s %(name)s[%(process)d]%(task_label)s: "
                     "%(message)s")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "task_id", "task_name", "task_label", "taskName"}


class TaskFilter(logging.Filter):
    """Adds ``task_id``, ``task_name`` and ``task_label`` to each record (never drops one).

    On a handler it covers every logger whose records reach that handler; on a logger, only
    records logged through that logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "task_id", None) is None:  # else: given by extra=task_fields(...)
            ctx = maybe_current_task()
            record.task_id = None if ctx is None else ctx.id
            record.task_name = None if ctx is None else ctx.task
        elif not hasattr(record, "task_name"):
            record.task_name = None
        task_id, task_name = getattr(record, "task_id", None), getattr(record, "task_name", None)
        record.task_label = f" {task_name}[{task_id}]" if task_id is not None else ""
        return True


def task_fields(task_id: str, task_name: str) -> dict[str, str]:
    """``extra=`` for a log line about a task written outside it (the worker's "task ...
    succeeded" lines), so that it carries the same fields as the task's own lines."""
    return {"task_id": task_id, "task_name": task_name}


_FILTER = TaskFilter()


def get_task_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` whose records carry the running task's id and name.

    Use it at module level in the app (``log = hubbub.get_task_logger(__name__)``); records
    logged inside a task then have ``task_id`` and ``task_name``, on every pool, and the
    worker's formats show them.
    """
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, ``process``, ``task_id``, ``task_name``, ``exception`` when there is one,
    and any ``extra=`` fields that JSON can hold (others as their ``repr``)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "task_id": getattr(record, "task_id", None),
            "task_name": getattr(record, "task_name", None),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        return json.dumps(line, default=repr, ensure_ascii=False)


class LogSetup(NamedTuple):
    """How a worker configured logging; its children copy it."""

    level: int
    format: str = "text"
    file: str | None = None


_setup: LogSetup | None = None


def current_setup() -> LogSetup | None:
    """What :func:`configure` last set up in this process (None: it was not called)."""
    return _setup


def configure(level: int | str, format: str = "text", file: str | None = None, *,
              child: bool = False) -> LogSetup:
    """Send the root logger's records to stderr or ``file``, as text or JSON lines, with
    task fields.

    Replaces the root logger's handlers (this is for the ``hubbub`` commands and their
    child processes, which own their process's logging).

    Args:
        level: a level name (``"info"``) or number.
        format: ``"text"`` or ``"json"``.
        file: append to this file (reopened if logrotate moves it) instead of stderr.
        child: a worker's child process: text lines also name the process id.

    Returns:
        The setup, for the worker's child processes.

    Raises:
        ConfigurationError: an unknown format or level, or a file that cannot be opened.
    """
    global _setup
    if format not in FORMATS:
        raise ConfigurationError(f"unknown log format {format!r}: use one of {', '.join(FORMATS)}")
    number = level if isinstance(level, int) else logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ConfigurationError(f"unknown log level {level!r}: use debug, info, warning or error")
    handler: logging.Handler
    if file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        from logging.handlers import WatchedFileHandler  # only with a log file

        try:
            handler = WatchedFileHandler(file, encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot open log file {file}: {exc.strerror}; check the "
                                     "path and its folder's permissions") from None
    handler.addFilter(_FILTER)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(
        CHILD_TEXT_FORMAT if child else TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(number)
    _setup = LogSetup(number, format, file)
    return _setup
