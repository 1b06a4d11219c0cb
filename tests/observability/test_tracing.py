"""OpenTelemetry spans: send -> run -> the task's own span, in whatever process runs it.

The app keeps an SDK ``InMemorySpanExporter`` in every process that imports it; a child
process writes what it exported to a file when it stops (an ``on_process_stop`` hook), and
the test reads those files beside the spans of its own process (the sends, and the runs of
the async pool).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hubbub import Hub, HubbubError
from hubbub.message import Envelope
from hubbub.middleware import Middleware, PublishNext
from hubbub.tracing import instrument
from tests.worker.scratch import running_worker, scratch_app

SOURCE = textwrap.dedent('''
    import json, os
    from pathlib import Path
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from hubbub import Hub, Retry
    from hubbub.tracing import instrument

    HERE = Path(__file__).parent
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    hub = Hub({url!r}, lease=5)
    instrument(hub, tracer_provider=provider)

    def as_record(span):
        parent = span.parent.span_id if span.parent is not None else None
        return {{"name": span.name, "kind": span.kind.name, "trace": span.context.trace_id,
                 "id": span.context.span_id, "parent": parent, "pid": os.getpid(),
                 "attributes": dict(span.attributes or {{}}),
                 "status": span.status.status_code.name}}

    @hub.on_process_stop
    def dump() -> None:
        spans = [as_record(s) for s in exporter.get_finished_spans()]
        (HERE / f"spans-{{os.getpid()}}.json").write_text(json.dumps(spans))

    @hub.task
    def work(x: int) -> int:
        with provider.get_tracer("app").start_as_current_span("inner"):
            return x * 2

    @hub.task
    async def async_work(x: int) -> int:
        with provider.get_tracer("app").start_as_current_span("inner"):
            return x * 3

    @hub.task
    def boom() -> None:
        raise ValueError("kaput")

    @hub.task(retries=2)
    def flaky(marker: str) -> str:
        first = not Path(marker).exists()
        Path(marker).write_text("tried")
        if first:
            raise Retry(countdown=0)
        return "ok"
''')


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModuleType]:
    with scratch_app(tmp_path, SOURCE, "traceapp") as module:
        yield module


def spans(app: ModuleType, folder: Path) -> list[dict[str, Any]]:
    """Every finished span: this process's, and those the children wrote; by span id."""
    found = {span["id"]: span for span in map(app.as_record, app.exporter.get_finished_spans())}
    for path in folder.glob("spans-*.json"):
        found.update({span["id"]: span for span in json.loads(path.read_text())})
    return list(found.values())


def one(found: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    [span] = [s for s in found if all(s.get(k) == v for k, v in match.items())]
    return span


def runs_of(found: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [s for s in found if s["kind"] == "CONSUMER"
            and s["attributes"]["hubbub.task.id"] == task_id]


@pytest.mark.parametrize("pool", ["prefork", "hybrid", "gevent", "async"])
def test_the_run_span_is_the_send_spans_child_and_the_tasks_own_span_is_its_child(
        app: ModuleType, tmp_path: Path, pool: str) -> None:
    work = app.async_work if pool != "prefork" else app.work
    with running_worker(app, pool):
        done = work.delay(21)
        failed = app.boom.delay()
        retried = app.flaky.delay(str(tmp_path / "flaky.marker"))
        assert done.get(timeout=30) in (42, 63)
        with pytest.raises(HubbubError):
            failed.get(timeout=30)
        assert retried.get(timeout=30) == "ok"
    found = spans(app, tmp_path)

    send = one(found, kind="PRODUCER", name=f"send {work.name}")
    [run] = runs_of(found, done.id)
    inner = one(found, name="inner")
    assert run["name"] == f"run {work.name}"
    assert run["trace"] == send["trace"] == inner["trace"]
    assert run["parent"] == send["id"]
    assert inner["parent"] == run["id"]
    assert send["parent"] is None  # nothing was current in the test's thread
    assert run["attributes"] == {
        "messaging.system": "hubbub", "messaging.operation": "process",
        "messaging.destination.name": "default", "messaging.message.id": done.id,
        "hubbub.task.name": work.name, "hubbub.task.id": done.id, "hubbub.task.retries": 0,
        "hubbub.outcome": "success"}
    assert send["attributes"]["hubbub.task.id"] == done.id
    if pool == "async":
        assert run["pid"] == send["pid"]
    else:  # made in the child that ran the task, as the task's own span was
        assert run["pid"] != send["pid"]
        assert inner["pid"] == run["pid"]

    [failure] = runs_of(found, failed.id)
    assert failure["attributes"]["hubbub.outcome"] == "failure"
    assert failure["attributes"]["error.type"] == "ValueError"
    assert failure["status"] == "ERROR"

    attempts = sorted(runs_of(found, retried.id), key=lambda s: s["attributes"]
                      ["hubbub.task.retries"])
    assert [(s["attributes"]["hubbub.task.retries"], s["attributes"]["hubbub.outcome"])
            for s in attempts] == [(0, "retry"), (1, "success")]
    retry_send = one(found, kind="PRODUCER", name="send " + app.flaky.name)
    assert {s["parent"] for s in attempts} == {retry_send["id"]}  # the retry keeps the headers


class Seen(Middleware):
    """Keeps every envelope published (after the send span put its headers in)."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def around_publish(self, envelope: Envelope, call_next: PublishNext) -> None:
        self.envelopes.append(envelope)
        await call_next(envelope)


def test_without_instrument_nothing_is_traced_and_no_header_is_added() -> None:
    seen = Seen()
    hub = Hub("memory://", middleware=[seen])
    noop = hub.task(lambda: None, name="noop")
    try:
        noop.delay()
        assert hub.tracing is None
        assert not hub.hooks  # the worker's hot path skips the hooks
        assert seen.envelopes[0].headers == {}
    finally:
        hub.close()


def test_a_send_inside_a_span_is_its_child_and_carries_its_traceparent() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen = Seen()
    hub = Hub("memory://", middleware=[seen])
    tracing = instrument(hub, tracer_provider=provider)
    assert instrument(hub) is tracing  # an app module imported twice instruments once
    assert len(hub.hooks.around) == 1
    noop = hub.task(lambda: None, name="noop")
    try:
        with provider.get_tracer("test").start_as_current_span("request") as request:
            noop.delay()
    finally:
        hub.close()
    send = next(s for s in exporter.get_finished_spans() if s.name == "send noop")
    assert send.parent is not None
    assert send.parent.span_id == request.get_span_context().span_id
    ctx = send.context
    assert seen.envelopes[0].headers == {  # W3C trace context: version-trace-span-flags
        "traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"}
