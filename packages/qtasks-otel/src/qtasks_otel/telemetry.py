"""The tracer and the instruments, made once per pair of providers, and how to flush them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry import metrics, trace

from qtasks_otel import __version__
from qtasks_otel import semconv as sc


@dataclass(frozen=True, slots=True)
class Telemetry:
    """What the spans and measurements are made with.

    Without explicit providers the global ones are used; before an SDK sets them, those are
    proxies that forward to the real provider once one is set, so a worker may configure its
    SDK late (after a fork, in its own ``qtasks_worker_lifespan``) and still be instrumented.
    """

    tracer_provider: trace.TracerProvider | None
    meter_provider: metrics.MeterProvider | None
    tracer: trace.Tracer
    sent: metrics.Counter
    consumed: metrics.Counter
    send_duration: metrics.Histogram
    process_duration: metrics.Histogram
    active: metrics.UpDownCounter
    retries: metrics.Counter
    wait_duration: metrics.Histogram

    @classmethod
    def create(
        cls, tracer_provider: trace.TracerProvider | None, meter_provider: metrics.MeterProvider | None
    ) -> Telemetry:
        tracer = trace.get_tracer(sc.SCOPE, __version__, tracer_provider, schema_url=sc.SCHEMA_URL)
        meter = metrics.get_meter(sc.SCOPE, __version__, meter_provider, schema_url=sc.SCHEMA_URL)
        return cls(
            tracer_provider,
            meter_provider,
            tracer,
            sent=meter.create_counter(sc.SENT_MESSAGES, "{message}", "Messages the producer attempted to send."),
            consumed=meter.create_counter(sc.CONSUMED_MESSAGES, "{message}", "Messages delivered to a worker."),
            send_duration=meter.create_histogram(
                sc.CLIENT_OPERATION_DURATION,
                "s",
                "Duration of sending a message.",
                explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS,
            ),
            process_duration=meter.create_histogram(
                sc.PROCESS_DURATION,
                "s",
                "Duration of processing one delivery: call, record and settlement.",
                explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS,
            ),
            active=meter.create_up_down_counter(sc.TASK_ACTIVE, "{task}", "Deliveries being processed."),
            retries=meter.create_counter(sc.TASK_RETRIES, "{retry}", "Failed attempts that were scheduled again."),
            wait_duration=meter.create_histogram(
                sc.TASK_WAIT_DURATION,
                "s",
                "Time from when a message could first run (sent, or its eta) to when a worker started it.",
                explicit_bucket_boundaries_advisory=sc.WAIT_BUCKETS,
            ),
        )

    def flushers(self) -> list[Callable[[int], object]]:
        """The ``force_flush`` of each provider that has one: SDK providers do, the API's do not."""
        providers = (
            self.tracer_provider or trace.get_tracer_provider(),
            self.meter_provider or metrics.get_meter_provider(),
        )
        return [flush for p in providers if (flush := getattr(p, "force_flush", None)) is not None]
