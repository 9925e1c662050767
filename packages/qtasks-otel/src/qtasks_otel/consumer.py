"""The worker side: a ``process {queue}`` CONSUMER span around each execution, and its metrics.

Correlation with the producer (messaging conventions, "Consumer spans"):

* ``parent`` (default): the span is a child of the creation context extracted from the
  headers (the producer's send span) **and** links to it. One trace from request to task.
* ``link``: the span starts a new trace and only links to the creation context. For fan-out
  workloads, where one request enqueues thousands of tasks and a single trace would grow huge.
  The price: with a ``ParentBased`` sampler each task trace is sampled on its own, so a link may
  point to a producer trace that was dropped.

In both modes the extracted context is attached while the task runs, so baggage crosses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from qtasks_otel import semconv as sc
from qtasks_otel.attributes import bounded_task_name, error_type, function_name

if TYPE_CHECKING:
    from qtasks.worker import TaskRun

    from qtasks_otel.telemetry import Telemetry

Propagation = Literal["parent", "link"]

#: Outcomes that mean the attempt failed: the span gets status ERROR and ``error.type``.
#: ``interrupted``: the worker stopped during the run and gave the message back.
FAILED = frozenset({"failure", "retry", "rejected", "dead_letter", "interrupted"})


def extract(headers: dict[str, str]) -> Context:
    """The context the producer injected, on top of an empty one (never the worker's own).
    Malformed fields are ignored by the propagators; a header that breaks one anyway must not
    break the task, so it then counts as absent."""
    try:
        return propagate.extract(headers, context=Context())
    except Exception:  # a third-party propagator choking on a value: run the task untraced
        return Context()


@contextmanager
def process_span(
    telemetry: Telemetry, run: TaskRun, system: str, propagation: Propagation, record_exception: bool
) -> Iterator[None]:
    """Make the process span current for the whole execution of ``run`` (call, record,
    settlement, and so the send span of a retry), then record how it ended."""
    message = run.message
    extracted = extract(message.headers)
    creation = trace.get_current_span(extracted).get_span_context()
    links = [Link(creation)] if creation.is_valid else []
    ambient = trace.get_current_span().get_span_context()
    if ambient.is_valid:  # a worker embedded in a traced app: keep the surrounding span reachable
        links.append(Link(ambient))
    parent = extracted if propagation == "parent" else trace.set_span_in_context(trace.INVALID_SPAN, extracted)
    attributes: dict[str, str | int] = {
        sc.MESSAGING_SYSTEM: system,
        sc.MESSAGING_DESTINATION_NAME: message.queue,
        sc.MESSAGING_OPERATION_NAME: sc.PROCESS,
        sc.MESSAGING_OPERATION_TYPE: sc.PROCESS,
        sc.MESSAGING_MESSAGE_ID: message.id,
        sc.MESSAGING_CLIENT_ID: run.worker.id,
        sc.TASK_NAME: message.name,
        sc.TASK_ID: message.id,
        sc.TASK_ATTEMPT: message.attempt,
    }
    if run.task is not None:
        attributes[sc.CODE_FUNCTION_NAME] = function_name(run.task.func)
    span = telemetry.tracer.start_span(
        f"process {message.queue}", parent, kind=SpanKind.CONSUMER, attributes=attributes, links=links
    )
    gauge = {
        sc.MESSAGING_SYSTEM: system,
        sc.MESSAGING_DESTINATION_NAME: message.queue,
        sc.TASK_NAME: bounded_task_name(message.name, run.task is not None),
    }
    labels = {**gauge, sc.MESSAGING_OPERATION_NAME: sc.PROCESS, sc.MESSAGING_OPERATION_TYPE: sc.PROCESS}
    telemetry.consumed.add(1, labels)
    ready_at = max(message.created_at, message.eta or 0.0)
    telemetry.wait_duration.record(max(0.0, time.time() - ready_at), gauge)  # wall clocks may disagree
    telemetry.active.add(1, gauge)
    started = time.perf_counter()
    token = context.attach(trace.set_span_in_context(span, extracted))
    try:
        yield
    except BaseException as exc:  # the worker is stopping: the message goes back to the broker
        _finish(span, labels, "interrupted", exc, "worker stopped; message returned to the broker", record_exception)
        raise
    else:
        outcome = run.outcome
        assert outcome is not None, "the worker sets run.outcome before the execution contexts exit"
        kind = outcome.kind.value
        _finish(span, labels, kind, outcome.exc, outcome.reason, record_exception)
        if kind == "retry":
            telemetry.retries.add(1, {**gauge, sc.ERROR_TYPE: labels[sc.ERROR_TYPE]})
    finally:
        context.detach(token)
        span.end()
        telemetry.active.add(-1, gauge)
        telemetry.process_duration.record(time.perf_counter() - started, labels)


def _finish(
    span: Span, labels: dict[str, str], kind: str, exc: BaseException | None, reason: str | None, record: bool
) -> None:
    """Set the outcome on the span and the duration labels; a failed attempt is an error even
    when it will be retried (each process span describes one attempt)."""
    span.set_attribute(sc.TASK_OUTCOME, kind)
    labels[sc.TASK_OUTCOME] = kind
    if kind not in FAILED:
        return
    labels[sc.ERROR_TYPE] = error_type(exc) if exc is not None else kind
    span.set_attribute(sc.ERROR_TYPE, labels[sc.ERROR_TYPE])
    span.set_status(Status(StatusCode.ERROR, reason))
    if record and exc is not None:
        span.record_exception(exc)
