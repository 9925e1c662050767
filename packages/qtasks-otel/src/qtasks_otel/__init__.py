"""qtasks-otel: OpenTelemetry tracing and metrics for qtasks, to the messaging conventions.

Installing the distribution is enough: its ``otel`` entry point instruments every app with the
global providers. :class:`QtasksOtel` gives an app its own providers or options, and
:func:`add_trace_ids` is a structlog processor that puts ``trace_id``/``span_id`` on log lines.

Importing this package stays cheap (it is imported by every app that discovers plugins);
OpenTelemetry itself is imported when an app starts or the processor is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from qtasks_otel.plugin import QtasksOtel

if TYPE_CHECKING:
    from qtasks_otel.logs import add_trace_ids

__all__ = ["QtasksOtel", "__version__", "add_trace_ids"]


def __getattr__(name: str) -> Any:
    if name == "add_trace_ids":
        from qtasks_otel.logs import add_trace_ids

        return add_trace_ids
    raise AttributeError(f"module 'qtasks_otel' has no attribute {name!r}")
