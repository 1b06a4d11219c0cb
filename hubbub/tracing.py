"""OpenTelemetry traces: a span for each send and one for each run, linked through the message.

Needs the ``otel`` extra (``pip install hubbub[otel]``: opentelemetry-api; the app brings the
SDK and exporter it configures). Off unless the app calls :func:`instrument`; then:

- ``send <task>`` (kind PRODUCER) is made in the caller's thread around ``Task.delay`` /
  ``apply_async`` / ``hub.send_task`` (``Hub.publish`` and ``Hub.send_async``), as a child of
  whatever span is current there, and its W3C ``traceparent`` (and ``tracestate``) is put in
  the envelope's ``headers``;
- ``run <task>`` (kind CONSUMER) is made by an ``around_task`` hook, so in the process and
  thread that runs the task (a prefork, hybrid or gevent child too): its parent is the send
  span read from the headers, and spans the task's own code makes are its children.

Attributes: ``messaging.system`` (``hubbub``), ``messaging.operation``,
``messaging.destination.name`` (the queue), ``messaging.message.id`` and ``hubbub.task.id``
(the task id), ``hubbub.task.name``, ``hubbub.task.retries``; on the run span also
``hubbub.outcome`` (``success``, ``failure``, ``retry``, ``rejected``) and, for a failure,
``error.type`` with the span's status set to ERROR.

Call :func:`instrument` where the app's hub is made (the app module), so that every process
that imports the app, children included, is instrumented; each process uses the global
tracer provider it configured (or the one given).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from hubbub.context import TaskContext
from hubbub.errors import ConfigurationError, Reject, Retry

if TYPE_CHECKING:
    from hubbub.hub import Hub
    from hubbub.message import Envelope

__all__ = ["SendTracing", "instrument"]

SCOPE = "hubbub"


def _otel() -> tuple[Any, Any]:
    """``(opentelemetry.trace, opentelemetry.propagate)``.

    Raises:
        ConfigurationError: the ``otel`` extra is not installed.
    """
    try:  # here, not at the top: hubbub imports and runs without the extra
        from opentelemetry import propagate, trace
    except ImportError:
        raise ConfigurationError("tracing needs an extra: pip install hubbub[otel] "
                                 "(opentelemetry-api)") from None
    return trace, propagate


def _attributes(operation: str, task: str, task_id: str, queue: str,
                retries: int) -> dict[str, Any]:
    return {"messaging.system": "hubbub", "messaging.operation": operation,
            "messaging.destination.name": queue, "messaging.message.id": task_id,
            "hubbub.task.name": task, "hubbub.task.id": task_id, "hubbub.task.retries": retries}


class SendTracing:
    """The send spans of one hub (``hub.tracing`` once :func:`instrument` ran).

    Args:
        tracer_provider: where spans go (default: the global one; an app may set it after
            instrumenting, since OpenTelemetry's proxy tracer follows the global provider).
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        self.trace, self.propagate = _otel()
        self._tracer = self.trace.get_tracer(SCOPE, tracer_provider=tracer_provider)

    def tracer(self) -> Any:
        """The tracer spans are made with."""
        return self._tracer

    @contextlib.contextmanager
    def sending(self, envelopes: Sequence[Envelope]) -> Iterator[list[Envelope]]:
        """One PRODUCER span per envelope for the block; yields the envelopes with each
        span's ``traceparent`` in their headers (send those)."""
        trace, tracer = self.trace, self.tracer()
        spans, sent = [], []
        for env in envelopes:
            span = tracer.start_span(
                f"send {env.task}", kind=trace.SpanKind.PRODUCER,
                attributes=_attributes("publish", env.task, env.id, env.queue, env.retries))
            carrier: dict[str, str] = {}
            self.propagate.inject(carrier, context=trace.set_span_in_context(span))
            spans.append(span)
            sent.append(replace(env, headers={**env.headers, **carrier}) if carrier else env)
        try:
            yield sent
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", type(exc).__name__)
            raise
        finally:
            for span in spans:
                span.end()

    def run_span(self, ctx: TaskContext) -> contextlib.AbstractContextManager[Any]:
        """The ``around_task`` hook: the CONSUMER span around the task's own call."""
        return self._run(ctx)

    @contextlib.contextmanager
    def _run(self, ctx: TaskContext) -> Iterator[Any]:
        trace = self.trace
        parent = self.propagate.extract(ctx.headers) if ctx.headers else None
        with self.tracer().start_as_current_span(
                f"run {ctx.task}", context=parent, kind=trace.SpanKind.CONSUMER,
                attributes=_attributes("process", ctx.task, ctx.id, ctx.queue, ctx.retries),
                record_exception=False, set_status_on_exception=False) as span:
            try:
                yield span
            except Retry:
                span.set_attribute("hubbub.outcome", "retry")
                raise
            except Reject:
                span.set_attribute("hubbub.outcome", "rejected")
                raise
            except BaseException as exc:
                span.set_attribute("hubbub.outcome", "failure")
                span.set_attribute("error.type", type(exc).__name__)
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
                raise
            span.set_attribute("hubbub.outcome", "success")


def instrument(hub: Hub, *, tracer_provider: Any = None) -> SendTracing:
    """Trace ``hub``'s sends and runs with OpenTelemetry (see the module's docstring).

    Idempotent: a second call (an app module imported twice) returns the first tracing.

    Args:
        hub: the application.
        tracer_provider: where spans go (default: the global tracer provider).

    Returns:
        The hub's send tracing (also ``hub.tracing``).

    Raises:
        ConfigurationError: the ``otel`` extra is not installed.
    """
    if hub.tracing is not None:
        return hub.tracing
    tracing = SendTracing(tracer_provider)
    hub.tracing = tracing
    hub.hooks.add("around_task", tracing.run_span)
    return tracing
