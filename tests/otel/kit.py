"""Test helpers for qtasks-otel: an SDK with in-memory exporters, and plugins that record what a
worker saw. Also imported by the worker process of the cross-process tests."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from qtasks.hookspecs import hookimpl
from qtasks_otel import QtasksOtel


class Sdk:
    """Providers with an in-memory span exporter and metric reader, and what they caught."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)

    def plugin(self, **options: Any) -> QtasksOtel:
        return QtasksOtel(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options)

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans in the order they ended, optionally only those called ``name``."""
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def by_task(self, task_id: str, name: str) -> list[ReadableSpan]:
        """The spans called ``name`` of one task, by attempt."""
        found = [s for s in self.spans(name) if s.attributes is not None and s.attributes["qtasks.task.id"] == task_id]
        return sorted(found, key=lambda s: s.attributes["qtasks.task.attempt"] if s.attributes else 0)

    def metrics(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        assert data is not None, "nothing was measured"
        return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

    def points(self, name: str) -> list[Any]:
        return list(self.metrics()[name].data.data_points)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def traceparent_of(span: ReadableSpan) -> str:
    """The W3C ``traceparent`` header value that names ``span`` (flags as the SDK set them)."""
    ctx = span.context
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as plain JSON data: what the worker process writes for the test to read."""
    ctx, parent = span.context, span.parent
    assert ctx is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent": None if parent is None else {"span_id": f"{parent.span_id:016x}", "is_remote": parent.is_remote},
        "links": [
            {"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
            for link in span.links
        ],
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "description": span.status.description,
        "events": [event.name for event in span.events],
    }


def ids_of(span: ReadableSpan) -> dict[str, str]:
    """``trace_id`` and ``span_id`` of a span, as hex strings (as :func:`span_record` writes them)."""
    record = span_record(span)
    return {"trace_id": record["trace_id"], "span_id": record["span_id"]}


class HeaderRecorder:
    """A plugin that keeps the headers each run arrived with (decoded from the broker's bytes)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.seen: dict[str, dict[str, str]] = {}

    @hookimpl
    def qtasks_execution_context(self, run: Any) -> None:
        self.seen[run.message.id] = dict(run.message.headers)
        if self.path is not None:
            with open(self.path, "a") as out:
                out.write(json.dumps({"id": run.message.id, "headers": run.message.headers}) + "\n")


class HeaderSetter:
    """A plugin that sets fixed headers on every message sent (a creation context from "the user",
    or garbage)."""

    def __init__(self, **headers: str) -> None:
        self.headers = headers

    @hookimpl
    def qtasks_inject_headers(self, message: Any, headers: dict[str, str]) -> None:
        headers.update(self.headers)
