"""What a task did, as an ``Outcome`` that can always be sent and stored.

Every pool reports through these functions (by way of :mod:`hubbub.worker.execute`), so a task
ends the same wherever it runs: ``Retry``/``Reject`` steer, anything else it raises is a
failure, ``BaseException`` subclasses included. Describing an exception never raises
(:func:`describe`), whatever its ``__str__``/``__repr__`` do, and its text is always valid
UTF-8 and bounded (:data:`TEXT_LIMIT`); a returned value is checked with the codec results are
stored with (:func:`success`).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from hubbub.codecs import Unencodable, explain, json_dumps, pack
from hubbub.errors import ErrorKind, Reject, Retry
from hubbub.job import Failed, Outcome, Rejected, Succeeded
from hubbub.results.base import ErrorInfo
from hubbub.task import Task, declared_name

log = logging.getLogger("hubbub.worker")

TEXT_LIMIT = 64 * 1024  # bytes of an error message or traceback kept


def clean_text(text: str, *, tail: bool = False) -> str:
    """``text`` as valid UTF-8 (a lone surrogate becomes ``\\udcff``), cut to ``TEXT_LIMIT``
    bytes (its first ones, or its last with ``tail``): what JSON stores, pickles and log lines
    can all carry."""
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= TEXT_LIMIT:
        return text if len(data) == len(text) else data.decode("utf-8")
    if tail:
        return "[...]\n" + data[-TEXT_LIMIT:].decode("utf-8", "ignore")
    return data[:TEXT_LIMIT].decode("utf-8", "ignore") + " [...]"


def type_name(exc: BaseException) -> str:
    """The exception's class name; never raises."""
    try:
        return clean_text(str(type(exc).__name__))
    except BaseException:  # a metaclass that misbehaves
        return "Exception"


def message_of(exc: BaseException) -> str:
    """``str(exc)``, else ``repr(exc)``, else ``<unprintable X>``; never raises."""
    for render in (str, repr):
        try:
            return clean_text(render(exc))
        except BaseException:  # noqa: S112 - a __str__ that raises must not escape
            continue
    return f"<unprintable {type_name(exc)}>"


def traceback_of(exc: BaseException) -> str:
    """The formatted traceback, its last ``TEXT_LIMIT`` bytes; never raises."""
    try:
        text = "".join(traceback.format_exception(exc))
    except BaseException:  # formatting runs code of the exception's own
        return ""
    return clean_text(text, tail=True)


def describe(exc: BaseException) -> ErrorInfo:
    """The one safe description of an exception: type name, message, bounded traceback.

    Never raises, whatever the exception's ``__str__``/``__repr__`` do, and the text is always
    encodable (JSON, pickle, logs).
    """
    return ErrorInfo(type_name(exc), message_of(exc), traceback_of(exc))


def exception_text(exc: BaseException) -> str:
    """``"ValueError: bad input"`` for reasons and log lines; never raises."""
    return f"{type_name(exc)}: {message_of(exc)}"


def failure(task: Task[Any, Any], exc: BaseException, duration: float) -> Outcome:
    """The outcome for an exception raised by a task (any ``BaseException``).

    A ``Retry`` raised from another exception (``raise Retry(...) from exc``, or while
    handling it) records that exception, so a task that runs out of retries fails with its
    real error, not ``Retry: reason``. An exception of a class the task declared in
    ``raises`` is recorded under that class's qualified name (``shop.OrderError``), which
    ``Result.get()`` matches to raise it as such.
    """
    if isinstance(exc, Retry):
        if task.spec.retries == 0:
            log.warning("task %s raised Retry, but it has retries=0, so it fails now: give "
                        "it @hub.task(retries=N) to be retried", task.name)
        cause = _retried_for(exc)
        if cause is not None:
            return Failed(_described(task, cause), duration, retry=True, countdown=exc.countdown)
        reason = clean_text(str(exc.reason)) if exc.reason else "retry requested"
        return Failed(ErrorInfo(ErrorKind.RETRY, reason), duration, retry=True,
                      countdown=exc.countdown)
    if isinstance(exc, Reject):
        return Rejected(clean_text(str(exc.reason)), duration)
    retry = isinstance(exc, task.spec.retry_for or (Exception,))
    error = _described(task, exc)
    if not error.message and not isinstance(exc, Exception):  # a bare ``raise KeyboardInterrupt``
        error = ErrorInfo(error.type, f"task raised {error.type}", error.traceback)
    return Failed(error, duration, retry=retry)


def _retried_for(exc: Retry) -> BaseException | None:
    """The exception a ``Retry`` was raised for (its cause, else the one being handled)."""
    cause = exc.__cause__
    if cause is None and not exc.__suppress_context__:
        cause = exc.__context__
    return None if cause is None or isinstance(cause, Retry | Reject) else cause


def _described(task: Task[Any, Any], exc: BaseException) -> ErrorInfo:
    error = describe(exc)
    for cls in type(exc).__mro__:
        if cls in task.spec.raises:  # the most specific declared class
            return ErrorInfo(clean_text(declared_name(cls)), error.message, error.traceback)
    return error


def success(task: Task[Any, Any], value: Any, duration: float) -> Outcome:
    """The outcome for a returned value; a value the result store cannot hold is a failure.

    The check packs the value as the result store does, so a success here can be stored,
    and a failure (``ResultNotEncodable``, naming the value) can be sent and stored instead.
    """
    if value is not None and not task.spec.ignore_result:  # None: most tasks, always stored
        problem = unencodable(value)
        if problem is not None:
            error = ErrorInfo(ErrorKind.NOT_ENCODABLE,
                              f"return value cannot be stored as JSON: {problem}")
            return Failed(error, duration)
    return Succeeded(value, duration)


def unencodable(value: Any) -> str | None:
    """Why the result store cannot hold ``value``, or None when it can; never raises.

    The reason names the part that fails: ``result[2]['when']: cannot encode object of
    type Foo``. The value is packed and written as ``encode_record`` does
    (:func:`hubbub.codecs.pack`, then :func:`hubbub.codecs.json_dumps`).
    """
    try:
        json_dumps(pack(value))
    except Unencodable:
        return _explained(value)
    except RecursionError:
        return "it is nested too deeply"
    except BaseException as exc:  # a user type's hooks may raise anything
        return message_of(exc)
    return None


def _explained(value: Any) -> str:
    try:
        return clean_text(explain(value, "result"))
    except BaseException as exc:  # explaining runs the app's encoders again
        return message_of(exc)
