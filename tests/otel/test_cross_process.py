"""A trace that crosses from this process (the producer) into a real worker process.

Per backend, one worker process (``tests/otel/worker_app.py``) runs while three producers submit:
one instrumented with an in-memory SDK, one with qtasks-otel turned off, and one that sends a
garbage ``traceparent``. The worker is then stopped with SIGTERM; its spans and metrics reach
their files only through the flush qtasks-otel does at shutdown. Each test checks one thing
about that run.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, context
from opentelemetry.sdk.trace import ReadableSpan
from qtasks.asyncio import QueueTasks

from tests.conftest import ROOT, Proc, qtasks_cli
from tests.otel.kit import HeaderSetter, Sdk, ids_of, traceparent_of

pytestmark = pytest.mark.integration

TASKS = ("greet", "flaky", "baggage_of")
DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
GARBAGE = {"traceparent": "00-this-is-not-a-trace-01", "tracestate": "=,=", "baggage": ";;=="}


@dataclass
class Crossing:
    """What one worker run produced, on both sides."""

    system: str
    sdk: Sdk
    records: dict[str, Any] = field(default_factory=dict)
    worker_spans: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    worker_metrics: dict[str, Any] = field(default_factory=dict)
    exported_before_stop: list[str] = field(default_factory=list)
    exit_code: int | None = None

    def sent(self, task: str) -> ReadableSpan:
        """The producer's send span of the run called ``task``."""
        (span,) = self.sdk.by_task(self.records[task].id, "send default")
        return span

    def worker(self, task: str, name: str = "process default") -> list[dict[str, Any]]:
        """The worker's spans called ``name`` of the run called ``task``, by attempt."""
        task_id = self.records[task].id
        found = [s for s in self.worker_spans if s["name"] == name and s["attributes"]["qtasks.task.id"] == task_id]
        return sorted(found, key=lambda s: s["attributes"]["qtasks.task.attempt"])


def backend_url(request: pytest.FixtureRequest, directory: Path) -> tuple[str, str]:
    """(messaging.system, broker URL) of the parametrized backend."""
    if request.param == "sqlite":
        return "sqlite", f"sqlite:///{directory / 'qtasks.db'}"
    if importlib.util.find_spec("qtasks_redis") is None:
        pytest.fail("the redis case needs qtasks-redis installed (pip install -e packages/qtasks-redis)")
    try:
        url = request.getfixturevalue("redis_url")
    except pytest.FixtureLookupError:
        pytest.fail("the redis case needs the session fixture `redis_url` in tests/conftest.py")
    return "redis", str(url)


def producer(url: str, *plugins: Any, **options: Any) -> QueueTasks:
    app = QueueTasks(broker=url, storage=url, plugins=plugins, **options)
    for name in TASKS:  # declared here too, so the producer's metrics name them
        app.task(name=name)(lambda *args: None)
    return app


async def produce(crossing: Crossing, url: str) -> None:
    instrumented = producer(url, crossing.sdk.plugin())
    untraced = producer(url, disable_plugins=("otel",))
    garbage = producer(url, HeaderSetter(**GARBAGE), disable_plugins=("otel",))
    async with instrumented, untraced, garbage:
        crossing.records["greet"] = await instrumented.add_task("greet", "ada", timeout=30)
        crossing.records["flaky"] = await instrumented.add_task("flaky", timeout=30)
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            crossing.records["baggage_of"] = await instrumented.add_task("baggage_of", "tenant", timeout=30)
        finally:
            context.detach(token)
        crossing.records["untraced"] = await untraced.add_task("greet", "untraced", timeout=30)
        crossing.records["garbage"] = await garbage.add_task("greet", "garbage", timeout=30)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)], ids=["sqlite", "redis"]
)
def crossing(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp(f"crossing-{request.param}")
    system, url = backend_url(request, directory)
    sdk = Sdk()
    env = {"PYTHONPATH": str(ROOT), "QTASKS_BROKER": url, "QTASKS_STORAGE": url}
    argv = qtasks_cli("worker", "-A", "tests.otel.worker_app:app", "--log-format", "json")
    worker = Proc(argv, directory, env, name="otel-worker")
    try:
        worker.wait_for("worker.started")
        found = Crossing(system, sdk)
        asyncio.run(produce(found, url))
        found.exported_before_stop = [p.name for p in directory.glob("*.json*") if p.name != "headers.jsonl"]
        worker.signal(signal.SIGTERM)
        found.exit_code = worker.popen.wait(30)
    finally:
        worker.stop()
    found.worker_spans = read_lines(directory / "spans.jsonl")
    found.headers = {line["id"]: line["headers"] for line in read_lines(directory / "headers.jsonl")}
    if (directory / "metrics.json").exists():
        data = json.loads((directory / "metrics.json").read_text())
        found.worker_metrics = {
            m["name"]: m for rm in data["resource_metrics"] for sm in rm["scope_metrics"] for m in sm["metrics"]
        }
    if not found.worker_spans:
        sys.stderr.write(worker.output)
    yield found
    sdk.shutdown()


def test_every_run_succeeded(crossing: Crossing) -> None:
    assert {name: r.status for name, r in crossing.records.items()} == dict.fromkeys(crossing.records, "success")


def test_the_process_span_is_a_remote_child_of_the_producers_send_span(crossing: Crossing) -> None:
    send = crossing.sent("greet")
    (process,) = crossing.worker("greet")
    sent = ids_of(send)
    assert crossing.headers[crossing.records["greet"].id]["traceparent"] == traceparent_of(send)
    assert process["kind"] == "CONSUMER" and send.kind.name == "PRODUCER"
    assert process["trace_id"] == sent["trace_id"]
    assert process["parent"] == {"span_id": sent["span_id"], "is_remote": True}
    assert process["links"] == [sent]
    assert process["attributes"]["messaging.system"] == crossing.system
    assert dict(send.attributes or {})["messaging.system"] == crossing.system
    assert process["status"] == "UNSET"


def test_a_retry_is_chained_to_the_attempt_that_failed(crossing: Crossing) -> None:
    first_send = ids_of(crossing.sent("flaky"))
    failed, retried = crossing.worker("flaky")
    (retry_send,) = crossing.worker("flaky", "send default")
    assert {failed["trace_id"], retry_send["trace_id"], retried["trace_id"]} == {first_send["trace_id"]}
    assert failed["parent"] == {"span_id": first_send["span_id"], "is_remote": True}
    assert (failed["status"], failed["attributes"]["qtasks.task.outcome"]) == ("ERROR", "retry")
    assert failed["attributes"]["error.type"] == "qtasks.errors.Retry"
    assert retry_send["parent"] == {"span_id": failed["span_id"], "is_remote": False}
    assert retry_send["attributes"]["qtasks.task.attempt"] == 2
    assert retried["parent"] == {"span_id": retry_send["span_id"], "is_remote": True}
    assert (retried["status"], retried["attributes"]["qtasks.task.outcome"]) == ("UNSET", "success")


def test_baggage_set_in_the_producer_is_current_in_the_task(crossing: Crossing) -> None:
    assert crossing.records["baggage_of"].returning == "acme"
    assert crossing.headers[crossing.records["baggage_of"].id]["baggage"] == "tenant=acme"


def test_an_uninstrumented_producer_gives_a_root_span(crossing: Crossing) -> None:
    assert crossing.headers[crossing.records["untraced"].id] == {}
    (process,) = crossing.worker("untraced")
    assert (process["parent"], process["links"], process["status"]) == (None, [], "UNSET")


def test_a_garbage_traceparent_is_ignored(crossing: Crossing) -> None:
    assert crossing.headers[crossing.records["garbage"].id] == GARBAGE
    (process,) = crossing.worker("garbage")
    assert (process["parent"], process["links"], process["status"]) == (None, [], "UNSET")
    assert process["attributes"]["qtasks.task.outcome"] == "success"


def test_spans_and_metrics_are_flushed_when_the_worker_stops(crossing: Crossing) -> None:
    assert crossing.exported_before_stop == [], "the SDK was told to wait an hour before exporting"
    assert crossing.exit_code == 0
    # 5 runs, one of them retried: six process spans, and the retry's send span
    assert sorted(s["name"] for s in crossing.worker_spans) == ["process default"] * 6 + ["send default"]
    process = crossing.worker_metrics["messaging.process.duration"]
    assert process["unit"] == "s"
    points = process["data"]["data_points"]
    assert {p["attributes"]["qtasks.task.name"] for p in points} == set(TASKS)
    assert all(
        p["explicit_bounds"] == [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
        for p in points
    )
    retried = next(p for p in points if p["attributes"].get("qtasks.task.outcome") == "retry")
    assert retried["attributes"]["error.type"] == "qtasks.errors.Retry"
    consumed = crossing.worker_metrics["messaging.client.consumed.messages"]["data"]["data_points"]
    assert sum(p["value"] for p in consumed) == 6
    sent = crossing.sdk.points("messaging.client.sent.messages")
    assert sum(p.value for p in sent) == 3, "the instrumented producer counts its own sends"
