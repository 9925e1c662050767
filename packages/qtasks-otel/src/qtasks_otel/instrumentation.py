"""The hook implementations that instrument one started app.

An :class:`AppInstrumentation` is registered in the app's own plugin manager while the app runs
(see :mod:`qtasks_otel.plugin`): ``qtasks_publish_context`` and ``qtasks_inject_headers`` are
not told which app is sending, and this is how they know its broker, its tasks and its
providers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from qtasks.hookspecs import hookimpl

from qtasks_otel.attributes import bounded_task_name, messaging_system
from qtasks_otel.consumer import Propagation, process_span
from qtasks_otel.producer import inject, send_span

if TYPE_CHECKING:
    from qtasks.app import QueueTasks
    from qtasks.messages import Message
    from qtasks.worker import TaskRun, Worker

    from qtasks_otel.telemetry import Telemetry


class AppInstrumentation:
    """Spans, context propagation and metrics for one app, on one pair of providers."""

    def __init__(
        self,
        app: QueueTasks,
        telemetry: Telemetry,
        *,
        propagation: Propagation,
        record_exception: bool,
        flush_timeout: float,
    ) -> None:
        self.app = app
        self.telemetry = telemetry
        self.propagation: Propagation = propagation
        self.record_exception = record_exception
        self.flush_timeout = flush_timeout
        self.system = messaging_system(app.broker)

    @hookimpl(tryfirst=True)
    def qtasks_publish_context(self, message: Message) -> AbstractContextManager[None]:
        """Outermost publish context: the ``send {queue}`` span (PRODUCER, or CLIENT for a
        message that keeps its own creation context), current while the other publish contexts,
        the header injection and the send itself run."""
        label = bounded_task_name(message.name, self.app.lookup(message.name) is not None)
        return send_span(self.telemetry, message, self.system, label, self.record_exception)

    @hookimpl(tryfirst=True)
    def qtasks_inject_headers(self, message: Message, headers: dict[str, str]) -> None:
        """W3C ``traceparent``/``tracestate`` of the send span and ``baggage`` (whatever the
        global propagator writes) into the message headers."""
        inject(message, headers)

    @hookimpl(tryfirst=True)
    def qtasks_execution_context(self, run: TaskRun) -> AbstractContextManager[None]:
        """Outermost execution context: the ``process {queue}`` CONSUMER span. ``tryfirst`` so
        that it is entered before the core's log context and log lines inside see the span."""
        return process_span(self.telemetry, run, self.system, self.propagation, self.record_exception)

    @hookimpl
    def qtasks_internal_context(self, kind: str) -> AbstractContextManager[None]:
        """Broker polling, lease heartbeats and scheduler ticks run with instrumentation
        suppressed, so instrumented clients (redis, ...) emit no span per poll."""
        return suppressed()

    @hookimpl
    def qtasks_worker_lifespan(self, worker: Worker) -> Any:
        """Flush the exporters when the worker stops: nothing is lost at shutdown, even where
        ``atexit`` never runs (forked pool children end with ``os._exit``), and an embedded
        worker (``app.serve()``) flushes although its process goes on."""
        return self.flushing()

    @asynccontextmanager
    async def flushing(self) -> AsyncIterator[None]:
        """Flush the providers on exit (in a thread: an exporter may block on the network)."""
        try:
            yield
        finally:
            flushers = self.telemetry.flushers()
            if flushers:
                timeout = int(self.flush_timeout * 1000)
                await asyncio.to_thread(lambda: [flush(timeout) for flush in flushers])


@contextmanager
def suppressed() -> Iterator[None]:
    """OpenTelemetry's shared "suppress instrumentation" flag, set for the block. The key is the
    API's own, the one every contrib instrumentation checks."""
    token = context.attach(context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        yield
    finally:
        context.detach(token)
