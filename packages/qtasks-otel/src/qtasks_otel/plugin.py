"""The ``otel`` entry point, and :class:`QtasksOtel` for apps that bring their own providers.

Installed, the entry point instruments every app of the process with the **global** tracer and
meter providers: a no-op until an OpenTelemetry SDK sets them (before or after the app starts).

* Turn it off for one app: ``QueueTasks(disable_plugins=("otel",))``, or for every app of a
  process: ``QTASKS_DISABLE_PLUGINS=otel``.
* Own providers or options: ``QueueTasks(plugins=[QtasksOtel(tracer_provider=tp,
  meter_provider=mp, propagation="link")])``. An app with an explicit ``QtasksOtel`` is
  instrumented by that one only: the entry point steps aside for it, so nothing is recorded
  twice. Two ``QtasksOtel`` objects in one app are an error when it starts.

This module is imported by every app that discovers plugins, so it imports nothing heavy:
OpenTelemetry is imported when the first app starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from qtasks.hookspecs import hookimpl

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider
    from qtasks.app import QueueTasks

    from qtasks_otel.telemetry import Telemetry

#: The name under which an app's instrumentation is registered in its plugin manager while the
#: app runs.
REGISTERED_AS = "qtasks_otel.instrumentation"


class QtasksOtel:
    """OpenTelemetry tracing and metrics for the apps this plugin object is given to.

    :param tracer_provider: spans go here (default: the global provider).
    :param meter_provider: measurements go here (default: the global provider).
    :param propagation: ``"parent"`` (default): a task's process span is a child of the
        producer's send span and links to it. ``"link"``: it starts a new trace that only links
        to the send span (for fan-out workloads; see :mod:`qtasks_otel.consumer`).
    :param record_exception: also add the deprecated ``exception`` span event to failed spans
        (status and ``error.type`` are always set; the core already logs the traceback).
    :param flush_timeout: seconds allowed to flush the providers when a worker stops.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        propagation: Literal["parent", "link"] = "parent",
        record_exception: bool = False,
        flush_timeout: float = 10.0,
    ) -> None:
        if propagation not in ("parent", "link"):
            raise ValueError(f"propagation must be 'parent' or 'link', not {propagation!r}")
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.propagation: Literal["parent", "link"] = propagation
        self.record_exception = record_exception
        self.flush_timeout = flush_timeout
        self._telemetry: Telemetry | None = None

    def __repr__(self) -> str:
        return f"<QtasksOtel propagation={self.propagation!r}>"

    @hookimpl(tryfirst=True)
    def qtasks_app_lifespan(self, app: QueueTasks) -> Any:
        """Instrument ``app`` while it runs (``tryfirst``: before any other lifespan can send a
        message, and until the others have exited)."""
        return self.instrument(app)

    @contextmanager
    def instrument(self, app: QueueTasks) -> Iterator[None]:
        """Register this app's :class:`~qtasks_otel.instrumentation.AppInstrumentation` in its
        plugin manager until the app stops."""
        from qtasks_otel.instrumentation import AppInstrumentation
        from qtasks_otel.telemetry import Telemetry

        pm = app.plugins.pm
        if pm.get_plugin(REGISTERED_AS) is not None:
            raise RuntimeError(f"app {app.name!r} has more than one QtasksOtel plugin; give it one")
        if self._telemetry is None:
            self._telemetry = Telemetry.create(self.tracer_provider, self.meter_provider)
        instrumentation = AppInstrumentation(
            app,
            self._telemetry,
            propagation=self.propagation,
            record_exception=self.record_exception,
            flush_timeout=self.flush_timeout,
        )
        pm.register(instrumentation, name=REGISTERED_AS)
        try:
            yield
        finally:
            pm.unregister(name=REGISTERED_AS)


#: The entry point's plugin object: global providers, default options.
_GLOBAL = QtasksOtel()


@hookimpl(tryfirst=True)
def qtasks_app_lifespan(app: QueueTasks) -> Any:
    """Instrument ``app`` with the global providers, unless it was given its own
    :class:`QtasksOtel` (that one then instruments it alone)."""
    if any(isinstance(plugin, QtasksOtel) for plugin in app.plugins.pm.get_plugins()):
        return None
    return _GLOBAL.qtasks_app_lifespan(app)
