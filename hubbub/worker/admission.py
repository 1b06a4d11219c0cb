"""Admission: may a fetched delivery run here?

:class:`Admission` decodes and verifies a delivery's body, finds its task, caps poison by
the broker's delivery count and binds the arguments to the task's signature. It answers
:class:`Admitted` or :class:`Refused` (with the reason the delivery is dead-lettered for),
and never raises: whatever a broker hands out, one delivery cannot end the worker.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hubbub._slots import slot_setters
from hubbub.canvas.nodes import CanvasError, check_followups
from hubbub.errors import MessageError
from hubbub.limits.unique import unique_key
from hubbub.message import Envelope, decode, peek_id

if TYPE_CHECKING:
    from hubbub.hub import Hub
    from hubbub.task import Task
    from hubbub.transports.base import Delivery
    from hubbub.worker.sources import Source

log = logging.getLogger("hubbub.worker")


@dataclass(frozen=True, slots=True)
class Admitted:
    envelope: Envelope
    task: Task[Any, Any]


_ENVELOPE, _TASK = slot_setters(Admitted)


def _admitted(envelope: Envelope, task: Task[Any, Any]) -> Admitted:
    """``Admitted(envelope, task)``, slot by slot (:mod:`hubbub._slots`): every delivery is
    admitted."""
    admitted: Admitted = object.__new__(Admitted)
    _ENVELOPE(admitted, envelope)
    _TASK(admitted, task)
    return admitted


@dataclass(frozen=True, slots=True)
class Refused:
    """Dead-letter the delivery with ``reason``.

    ``task_id`` is the id to record a FAILURE for, or None when there is no id to trust: the
    body is unreadable, or it failed signature verification (an unverified body must not be
    able to fail somebody else's task).

    ``envelope`` is the decoded (and verified) envelope when there is one whose canvas, if
    any, passed :func:`~hubbub.canvas.nodes.check_followups`: the rest of its workflow fails
    with it. None when the body could not be decoded or its canvas is malformed (nothing in
    it can be followed).

    ``unique`` is the (key, job id) of a decoded unique job, given back at once: a refused
    job is settled, and must not keep its key until ``unique_for``.
    """

    reason: str
    task_id: str | None = None
    task: str | None = None
    envelope: Envelope | None = None
    unique: tuple[str, str] | None = None


class Admission:
    """Decides for each delivery whether it runs on this worker (one instance per worker)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        # task name -> its signature (None: not introspectable) and, when bind is a few
        # comparisons, its shape: looked up once per delivery
        self._signatures: dict[str, tuple[inspect.Signature | None, _Shape | None]] = {}

    def check(self, delivery: Delivery, source: Source | None = None) -> Admitted | Refused:
        """Admit ``delivery`` or say why not. Never raises.

        Args:
            delivery: what a fetch handed out.
            source: the lane's own source (the Celery bridge), which reads its deliveries;
                None for the hub's broker, whose bodies are hubbub envelopes.
        """
        try:
            return self._check(delivery, source)
        except Exception as exc:  # a body no rule foresaw (e.g. nested too deep to parse)
            log.exception("admission of message %r failed", delivery.id)
            try:
                text = f"{type(exc).__name__}: {exc}"
            except Exception:
                text = type(exc).__name__
            return Refused(f"message cannot be admitted ({text[:500]})")

    def _check(self, delivery: Delivery, source: Source | None) -> Admitted | Refused:
        settings = self.hub.settings
        limits = settings.limits
        signer = self.hub.signer
        if source is not None:  # Celery bridge (issue 17): the source reads its own format
            read = source.read(delivery)
            if isinstance(read, Refused):
                return read
            envelope = read
        else:
            try:
                envelope = decode(delivery.body, settings.accept, limits.max_message_size,
                                  signer)
            except MessageError as exc:
                # Without signing, the id in a malformed body is the best guess of whose
                # task this was. With signing, nothing in a refused body is trusted.
                trusted = signer is None
                return (_foreign(delivery, trusted)
                        or Refused(str(exc), peek_id(delivery.body) if trusted else None))
        if envelope.canvas is not None:  # -- canvas: what follows must be followable
            # Checked first: every later refusal carries the envelope, and the worker then
            # follows its canvas to fail the rest of the workflow.
            try:
                check_followups(envelope.canvas)
            except CanvasError as exc:
                return Refused(f"malformed canvas: {exc}", envelope.id, envelope.task,
                               unique=_unique(envelope))
        task = self.hub.tasks.get(envelope.task)
        if task is None:
            return refuse(f"unknown task {envelope.task!r}: not registered on this worker "
                           "(is its module imported by the -A app?)", envelope)
        if delivery.attempts > limits.max_deliveries:
            return refuse(f"delivered {delivery.attempts} times without finishing; its worker "
                           "died each time (poison message)", envelope)
        problem = self._bad_arguments(task, envelope)
        if problem:
            return refuse(f"bad arguments for task {envelope.task!r}: {problem}", envelope)
        return _admitted(envelope, task)

    def _bad_arguments(self, task: Task[Any, Any], envelope: Envelope) -> str | None:
        known = self._signatures.get(envelope.task)
        if known is None:
            try:
                found: inspect.Signature | None = inspect.signature(task.fn)
            except (TypeError, ValueError):
                found = None
            known = self._signatures[envelope.task] = (
                found, None if found is None else _Shape.of(found))
        signature, shape = known
        if signature is None:
            return None
        if shape is not None and shape.fits(envelope.args, envelope.kwargs):
            return None  # the answer bind would give, without building a BoundArguments
        try:
            signature.bind(*envelope.args, **envelope.kwargs)
        except TypeError as exc:
            return str(exc)
        return None


@dataclass(frozen=True, slots=True)
class _Shape:
    """A signature of positional-or-keyword parameters only (``def f(a, b=1)``, the usual
    task), whose ``bind`` is a few comparisons: names in order, the first ``required`` of
    them without a default."""

    names: tuple[str, ...]
    keywords: frozenset[str]
    required: int

    @classmethod
    def of(cls, signature: inspect.Signature) -> _Shape | None:
        params = list(signature.parameters.values())
        if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params):
            return None  # *args, **kwargs, keyword-only or positional-only: bind decides
        required = sum(1 for p in params if p.default is inspect.Parameter.empty)
        names = tuple(p.name for p in params)
        return cls(names, frozenset(names), required)

    def fits(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """True when ``bind(*args, **kwargs)`` succeeds (False: ask bind, which says why)."""
        given = len(args)
        if given > len(self.names):
            return False  # too many positional arguments
        if not kwargs:
            return given >= self.required
        if not kwargs.keys() <= self.keywords - set(self.names[:given]):
            return False  # an unknown keyword, or one given positionally too
        # parameters with defaults come last: the missing required ones are these
        return all(name in kwargs for name in self.names[given:self.required])


def refuse(reason: str, envelope: Envelope) -> Refused:
    """Refuse a decoded envelope whose canvas (if any) passed the check."""
    return Refused(reason, envelope.id, envelope.task, envelope, _unique(envelope))


def _unique(envelope: Envelope) -> tuple[str, str] | None:
    """-- limits: the unique key ``envelope`` holds, with its id (the key's owner)."""
    key = unique_key(envelope)
    return None if key is None else (key, envelope.id)


# -- Celery bridge (issue 17) ------------------------------------------------------------------


def _foreign(delivery: Delivery, trusted: bool) -> Refused | None:
    """A Celery message on a hubbub queue, refused with a reason naming its task and id."""
    # Here, not at the top: only a body hubbub could not read gets here (issue #18).
    from hubbub.compat.celery.protocol import recognise

    found = recognise(delivery.body, delivery.headers)
    if found is None:
        return None
    task, task_id = found
    return Refused(f"a Celery message (task {task!r}, id {task_id}) reached hubbub queue "
                   f"{delivery.queue!r}, and the Celery bridge is off for it: consume Celery's "
                   "queue with `hubbub worker --celery-queue NAME`, or send the task with "
                   "hubbub", task_id if trusted else None, task)
