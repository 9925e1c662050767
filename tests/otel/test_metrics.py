"""Metrics, read with the SDK's in-memory reader after real runs on the memory backends."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import qtasks
from qtasks.asyncio import QueueTasks
from qtasks.messages import Message
from qtasks.testing import running_worker

from tests.otel.kit import Sdk

DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
SEND = {"messaging.operation.name": "send", "messaging.operation.type": "send"}
PROCESS = {"messaging.operation.name": "process", "messaging.operation.type": "process"}
WHERE = {"messaging.system": "memory", "messaging.destination.name": "default"}


def make_app(sdk: Sdk) -> QueueTasks:
    app = QueueTasks(broker="memory", storage="memory", plugins=[sdk.plugin()])

    @app.task
    async def ok() -> None: ...

    @app.task
    async def explode() -> None:
        raise KeyError("missing")

    @app.task(retry=1, echo=True)
    async def flaky(self: Any) -> None:
        if self.ctx.attempt == 1:
            raise qtasks.Retry(after=0)

    return app


def by_attributes(points: list[Any]) -> dict[frozenset[tuple[str, Any]], Any]:
    return {frozenset(dict(p.attributes).items()): p for p in points}


def key(**attributes: Any) -> frozenset[tuple[str, Any]]:
    return frozenset(attributes.items())


async def test_messaging_metrics_have_the_conventional_names_units_buckets_and_attributes(sdk: Sdk) -> None:
    app = make_app(sdk)
    async with running_worker(app):
        for name in ("ok", "ok", "explode"):
            await app.add_task(name, timeout=10)
    metrics = sdk.metrics()
    units = {name: metrics[name].unit for name in metrics}
    assert units == {
        "messaging.client.sent.messages": "{message}",
        "messaging.client.operation.duration": "s",
        "messaging.client.consumed.messages": "{message}",
        "messaging.process.duration": "s",
        "qtasks.task.active": "{task}",
        "qtasks.task.wait.duration": "s",
    }
    sent = by_attributes(sdk.points("messaging.client.sent.messages"))
    assert sent[key(**WHERE, **SEND, **{"qtasks.task.name": "ok"})].value == 2
    assert sent[key(**WHERE, **SEND, **{"qtasks.task.name": "explode"})].value == 1
    consumed = by_attributes(sdk.points("messaging.client.consumed.messages"))
    assert consumed[key(**WHERE, **PROCESS, **{"qtasks.task.name": "ok"})].value == 2
    for histogram in ("messaging.client.operation.duration", "messaging.process.duration"):
        assert all(list(p.explicit_bounds) == DURATION_BUCKETS for p in sdk.points(histogram)), histogram
    assert list(sdk.points("qtasks.task.wait.duration")[0].explicit_bounds)[-1] == 1800
    process = by_attributes(sdk.points("messaging.process.duration"))
    ok = process[key(**WHERE, **PROCESS, **{"qtasks.task.name": "ok", "qtasks.task.outcome": "success"})]
    assert ok.count == 2, "no error.type on success"
    failed = key(**WHERE, **PROCESS, **{"qtasks.task.name": "explode", "qtasks.task.outcome": "failure"})
    assert process[failed | key(**{"error.type": "KeyError"})].count == 1


async def test_retries_are_counted_with_the_error_that_caused_them(sdk: Sdk) -> None:
    app = make_app(sdk)
    async with running_worker(app):
        record = await app.add_task("flaky", timeout=10)
    assert record.status == "success"
    [retry] = sdk.points("qtasks.task.retries")
    assert dict(retry.attributes) == {**WHERE, "qtasks.task.name": "flaky", "error.type": "qtasks.errors.Retry"}
    assert retry.value == 1
    sent = by_attributes(sdk.points("messaging.client.sent.messages"))
    assert sent[key(**WHERE, **SEND, **{"qtasks.task.name": "flaky"})].value == 2, "the retry is a send too"


async def test_active_tasks_go_up_while_running_and_back_down(sdk: Sdk) -> None:
    app = QueueTasks(broker="memory", storage="memory", plugins=[sdk.plugin()])
    started, release = asyncio.Event(), asyncio.Event()

    @app.task
    async def hold() -> None:
        started.set()
        await release.wait()

    def active() -> Any:
        [point] = sdk.points("qtasks.task.active")
        assert dict(point.attributes) == {**WHERE, "qtasks.task.name": "hold"}
        return point.value

    async with running_worker(app):
        record = await app.add_task("hold")
        await asyncio.wait_for(started.wait(), 10)
        assert active() == 1
        release.set()
        await app.wait(record.id, 10)
    assert active() == 0


async def test_no_metric_attribute_is_unbounded(sdk: Sdk) -> None:
    app = make_app(sdk)
    unknown = Message(name="sent_by_name_only")
    async with running_worker(app) as worker:
        records = [await app.add_task("ok", timeout=10), await app.add_task("explode", timeout=10)]
        await app.publish(unknown, lambda body: app.broker.publish(app.envelope(unknown, body)))
        await app.wait(unknown.id, 10)
    ids = {r.id for r in records} | {unknown.id, worker.id, str(os.getpid())}
    values = {v for m in sdk.metrics().values() for p in m.data.data_points for v in dict(p.attributes).values()}
    assert not values & ids, "no task id, worker id or pid in any metric"
    names = {dict(p.attributes).get("qtasks.task.name") for p in sdk.points("messaging.client.consumed.messages")}
    assert names == {"ok", "explode", "_OTHER"}, "a name the app does not declare is _OTHER"
    sent = {dict(p.attributes).get("qtasks.task.name") for p in sdk.points("messaging.client.sent.messages")}
    assert "sent_by_name_only" not in sent and "_OTHER" in sent
