"""A structlog processor that correlates log lines with traces.

Add it to your structlog configuration, after ``merge_contextvars``::

    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars,
        qtasks_otel.add_trace_ids,
        ...,
        structlog.processors.JSONRenderer(),
    ])

Inside a task, every line (yours and qtasks' own) then carries the ``trace_id`` (32 hex digits)
and ``span_id`` (16) of the current span: the task's process span, or a span you started in it.
Lines logged outside any span are left as they are. ``qtasks worker`` keeps a configuration the
app module made, so configuring structlog there is enough.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace


def add_trace_ids(logger: Any, method_name: str, event_dict: Any) -> Any:
    """Add ``trace_id`` and ``span_id`` of the current span, if there is a valid one; values
    the line already has are kept."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict.setdefault("trace_id", trace.format_trace_id(span_context.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(span_context.span_id))
    return event_dict
