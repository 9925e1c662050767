"""The app that the worker process of the cross-process tests runs (``-A tests.otel.worker_app:app``).

Its SDK exports only when flushed: spans wait in a ``BatchSpanProcessor`` with an hour's delay,
metrics in a reader with an hour's interval, and neither provider shuts down at exit. So whatever
reaches ``spans.jsonl`` and ``metrics.json`` in the working directory was flushed by qtasks-otel
when the worker stopped. ``headers.jsonl`` holds the headers each run arrived with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import qtasks
from opentelemetry import baggage
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from qtasks.asyncio import QueueTasks
from qtasks_otel import QtasksOtel

from tests.otel.kit import HeaderRecorder, span_record

HOUR_MS = 3_600_000


class JsonLinesSpanExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as out:
            out.writelines(json.dumps(span_record(span)) + "\n" for span in spans)
        return SpanExportResult.SUCCESS


class JsonMetricExporter(MetricExporter):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        with open(self.path, "w") as out:
            out.write(metrics_data.to_json(indent=None))
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


tracer_provider = TracerProvider(shutdown_on_exit=False)
tracer_provider.add_span_processor(
    BatchSpanProcessor(JsonLinesSpanExporter("spans.jsonl"), schedule_delay_millis=HOUR_MS)
)
meter_provider = MeterProvider(
    metric_readers=[PeriodicExportingMetricReader(JsonMetricExporter("metrics.json"), export_interval_millis=HOUR_MS)],
    shutdown_on_exit=False,
)

app = QueueTasks(
    "otel-worker",
    plugins=[
        QtasksOtel(tracer_provider=tracer_provider, meter_provider=meter_provider),
        HeaderRecorder("headers.jsonl"),
    ],
)


@app.task
async def greet(name: str) -> str:
    return f"hello {name}"


@app.task(retry=1, echo=True)
async def flaky(self: Any) -> int:
    if self.ctx.attempt == 1:
        raise qtasks.Retry(after=0)
    return int(self.ctx.attempt)


@app.task
async def baggage_of(key: str) -> Any:
    return baggage.get_baggage(key)
