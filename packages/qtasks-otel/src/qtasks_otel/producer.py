"""The producer side: a ``send {queue}`` PRODUCER span around each send, injected into headers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from qtasks_otel import semconv as sc
from qtasks_otel.attributes import error_type

if TYPE_CHECKING:
    from qtasks.messages import Message

    from qtasks_otel.telemetry import Telemetry

#: The W3C header that carries the creation context.
TRACEPARENT = "traceparent"


@contextmanager
def send_span(
    telemetry: Telemetry, message: Message, system: str, task_label: str, record_exception: bool
) -> Iterator[None]:
    """Make the send span current while the message is encoded and sent, then end it and count
    the send (with ``error.type`` if it failed). Inside, :func:`inject` puts its context into
    the message headers. A retry is sent from inside the failed attempt's process span, so its
    send span is that span's child."""
    span = telemetry.tracer.start_span(
        f"send {message.queue}",
        kind=SpanKind.PRODUCER,
        attributes={
            sc.MESSAGING_SYSTEM: system,
            sc.MESSAGING_DESTINATION_NAME: message.queue,
            sc.MESSAGING_OPERATION_NAME: sc.SEND,
            sc.MESSAGING_OPERATION_TYPE: sc.SEND,
            sc.MESSAGING_MESSAGE_ID: message.id,
            sc.TASK_NAME: message.name,
            sc.TASK_ID: message.id,
            sc.TASK_ATTEMPT: message.attempt,
        },
    )
    labels: dict[str, str] = {
        sc.MESSAGING_SYSTEM: system,
        sc.MESSAGING_DESTINATION_NAME: message.queue,
        sc.MESSAGING_OPERATION_NAME: sc.SEND,
        sc.MESSAGING_OPERATION_TYPE: sc.SEND,
        sc.TASK_NAME: task_label,
    }
    started = time.perf_counter()
    token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    except BaseException as exc:
        labels[sc.ERROR_TYPE] = error_type(exc)
        span.set_attribute(sc.ERROR_TYPE, labels[sc.ERROR_TYPE])
        span.set_status(Status(StatusCode.ERROR, str(exc) or None))
        if record_exception:
            span.record_exception(exc)
        raise
    finally:
        context.detach(token)
        span.end()
        telemetry.send_duration.record(time.perf_counter() - started, labels)
        telemetry.sent.add(1, labels)


def inject(message: Message, headers: dict[str, str]) -> None:
    """Write the current context (the send span, and any baggage) into the headers.

    A first attempt that already carries a ``traceparent`` got its creation context from the
    user (another plugin), which is never overwritten. A retry carries the fields of the previous
    send; they are replaced by the current ones (the retry's send span, the baggage the attempt
    ran with), which chains the attempts.
    """
    if message.attempt == 1 and TRACEPARENT in headers:
        return
    propagator = propagate.get_global_textmap()
    if message.attempt > 1:
        for field in propagator.fields:
            headers.pop(field, None)
    propagator.inject(headers)
