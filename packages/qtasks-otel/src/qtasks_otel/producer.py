"""The producer side: a ``send {queue}`` span around each send, injected into headers.

Span kind (messaging conventions v1.44, "Span kind" and "Producer spans"): the send span is
PRODUCER when its own context is injected as the message's creation context, which is the usual
case. A first attempt that already carries a ``traceparent`` keeps it (a custom creation
context is never modified); its send span is then CLIENT and links to that creation context.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from qtasks_otel import semconv as sc
from qtasks_otel.attributes import error_type
from qtasks_otel.consumer import extract

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
    the message headers, and the span is PRODUCER; if the message keeps the creation context it
    carries (:func:`keeps_creation_context`), the span is CLIENT and links to that context
    instead. A retry is sent from inside the failed attempt's process span, so its send span is
    that span's child."""
    links: list[Link] = []
    kind = SpanKind.PRODUCER
    if keeps_creation_context(message, message.headers):
        kind = SpanKind.CLIENT
        creation = trace.get_current_span(extract(message.headers)).get_span_context()
        if creation.is_valid:  # a garbage traceparent is kept too, but there is nothing to link to
            links.append(Link(creation))
    span = telemetry.tracer.start_span(
        f"send {message.queue}",
        kind=kind,
        links=links,
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


def keeps_creation_context(message: Message, headers: dict[str, str]) -> bool:
    """Whether the message is sent with the creation context its headers already carry: a first
    attempt with a ``traceparent`` (the user's, e.g. ``app.submit(Message(..., headers=...))``).
    A retry carries the fields of the previous send; :func:`inject` replaces them, so its send
    span is its creation context again. Asked when the send span starts (its kind cannot change
    later), and again by :func:`inject`."""
    return message.attempt == 1 and TRACEPARENT in headers


def inject(message: Message, headers: dict[str, str]) -> None:
    """Write the current context (the send span, and any baggage) into the headers.

    A first attempt that already carries a ``traceparent`` got its creation context from the
    user (another plugin), which is never overwritten. A retry carries the fields of the previous
    send; they are replaced by the current ones (the retry's send span, the baggage the attempt
    ran with), which chains the attempts.
    """
    if keeps_creation_context(message, headers):
        return
    propagator = propagate.get_global_textmap()
    if message.attempt > 1:
        for field in propagator.fields:
            headers.pop(field, None)
    propagator.inject(headers)
