"""The plugin as installed: entry point, cheap import, who instruments an app, flushing."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from qtasks.asyncio import QueueTasks
from qtasks.testing import running_worker
from qtasks_otel import QtasksOtel
from qtasks_otel.instrumentation import AppInstrumentation

from tests.otel.kit import HeaderRecorder, Sdk


def instrumentations(app: QueueTasks) -> list[AppInstrumentation]:
    return [p for p in app.plugins.pm.get_plugins() if isinstance(p, AppInstrumentation)]


def test_the_otel_entry_point_is_installed_and_loaded_into_apps() -> None:
    (entry_point,) = importlib.metadata.entry_points(group="qtasks", name="otel")
    assert entry_point.value == "qtasks_otel.plugin"
    assert QueueTasks().plugins.origins["otel"].startswith("qtasks-otel ")


def test_importing_the_plugin_module_does_not_import_opentelemetry() -> None:
    code = "import sys, qtasks_otel.plugin; print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


async def test_without_an_sdk_the_entry_point_is_a_harmless_no_op() -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider), "no test sets the global provider"
    headers = HeaderRecorder()
    app = QueueTasks(broker="memory", storage="memory", plugins=[headers])

    @app.task
    async def ok() -> int:
        return 1

    async with running_worker(app):
        assert len(instrumentations(app)) == 1, "the entry point instruments the app"
        record = await app.add_task("ok", timeout=10)
    assert record.returning == 1
    assert headers.seen[record.id] == {}, "no span, so nothing to propagate"


async def test_an_explicit_plugin_takes_over_from_the_entry_point(sdk: Sdk) -> None:
    app = QueueTasks(broker="memory", storage="memory", plugins=[sdk.plugin()])

    @app.task
    async def ok() -> None: ...

    async with running_worker(app):
        (only,) = instrumentations(app)
        assert only.telemetry.tracer_provider is sdk.tracer_provider
        await app.add_task("ok", timeout=10)
    assert sorted(s.name for s in sdk.spans()) == ["process default", "send default"]
    assert instrumentations(app) == [], "unregistered when the app stops"


async def test_an_app_restarts_with_its_instrumentation(sdk: Sdk) -> None:
    plugin = sdk.plugin()
    app = QueueTasks(broker="memory", storage="memory", plugins=[plugin])
    for _ in range(2):
        async with app:
            assert len(instrumentations(app)) == 1
    other = QueueTasks(broker="memory", storage="memory", plugins=[plugin])
    async with app, other:
        assert instrumentations(app)[0].telemetry is instrumentations(other)[0].telemetry, "one plugin, two apps"


async def test_two_explicit_plugins_in_one_app_are_an_error_at_start() -> None:
    app = QueueTasks(broker="memory", storage="memory", plugins=[QtasksOtel(), QtasksOtel()])
    with pytest.raises(RuntimeError, match="more than one QtasksOtel"):
        await app.start()


async def test_disable_plugins_turns_the_entry_point_off() -> None:
    app = QueueTasks(broker="memory", storage="memory", disable_plugins=("otel",))
    async with app:
        assert "otel" not in app.plugins.origins
        assert instrumentations(app) == []


def test_an_unknown_propagation_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="propagation"):
        QtasksOtel(propagation="sideways")  # type: ignore[arg-type]


async def test_the_worker_flushes_the_exporters_when_it_stops() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=3_600_000))
    app = QueueTasks(broker="memory", storage="memory", plugins=[QtasksOtel(tracer_provider=provider)])

    @app.task
    async def ok() -> None: ...

    async with app:
        async with running_worker(app):
            await app.add_task("ok", timeout=10)
            assert exporter.get_finished_spans() == (), "batched: nothing exported before a flush"
        assert sorted(s.name for s in exporter.get_finished_spans()) == ["process default", "send default"]
    provider.shutdown()
