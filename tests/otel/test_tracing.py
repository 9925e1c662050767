"""Spans in one process: a real worker on the memory backends, an SDK with in-memory exporters.

The worker still decodes every message from the broker's bytes and runs it in a fresh context,
so the process span's parent can only come from the headers (``is_remote`` proves it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import qtasks
from opentelemetry import context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import SpanKind, StatusCode
from qtasks.asyncio import QueueTasks
from qtasks.builtin.memory import MemoryBroker
from qtasks.messages import Message
from qtasks.testing import running_worker

from tests.otel.kit import HeaderRecorder, HeaderSetter, Sdk, traceparent_of


def make_app(sdk: Sdk, *plugins: Any, broker: Any = "memory", **options: Any) -> QueueTasks:
    return QueueTasks(broker=broker, storage="memory", plugins=[sdk.plugin(**options), *plugins])


async def test_send_span_context_is_what_the_message_headers_carry(sdk: Sdk) -> None:
    headers = HeaderRecorder()
    app = make_app(sdk, headers)

    @app.task(queue="emails")
    async def notify(user: str) -> str:
        return user

    async with running_worker(app):
        record = await app.add_task("notify", "ada", timeout=10)
    assert record.status == "success"
    (send,) = sdk.spans("send emails")
    assert send.kind is SpanKind.PRODUCER
    assert headers.seen[record.id]["traceparent"] == traceparent_of(send)
    assert not send.links, "its own context is the creation context: nothing to link to"
    assert dict(send.attributes or {}) == {
        "messaging.system": "memory",
        "messaging.destination.name": "emails",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.message.id": record.id,
        "qtasks.task.name": "notify",
        "qtasks.task.id": record.id,
        "qtasks.task.attempt": 1,
    }
    assert send.status.status_code is StatusCode.UNSET


async def test_process_span_is_a_remote_child_of_the_send_span_and_links_to_it(sdk: Sdk) -> None:
    app = make_app(sdk)

    @app.task(queue="emails")
    async def notify(user: str) -> str:
        return user

    async with running_worker(app) as worker:
        record = await app.add_task("notify", "ada", timeout=10)
    (send,) = sdk.spans("send emails")
    (process,) = sdk.spans("process emails")
    assert process.kind is SpanKind.CONSUMER
    assert send.context is not None and process.context is not None and process.parent is not None
    assert process.context.trace_id == send.context.trace_id
    assert process.parent.span_id == send.context.span_id
    assert process.parent.is_remote, "the parent came through the headers, not the ambient context"
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    attributes = dict(process.attributes or {})
    assert attributes == {
        "messaging.system": "memory",
        "messaging.destination.name": "emails",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.message.id": record.id,
        "messaging.client.id": worker.id,
        "qtasks.task.name": "notify",
        "qtasks.task.id": record.id,
        "qtasks.task.attempt": 1,
        "qtasks.task.outcome": "success",
        "code.function.name": f"{notify.func.__module__}.{notify.func.__qualname__}",
    }
    assert process.status.status_code is StatusCode.UNSET


async def test_link_mode_starts_a_new_trace_that_links_to_the_send_span(sdk: Sdk) -> None:
    app = make_app(sdk, propagation="link")

    @app.task
    async def fan_out() -> None: ...

    async with running_worker(app):
        await app.add_task("fan_out", timeout=10)
    (send,) = sdk.spans("send default")
    (process,) = sdk.spans("process default")
    assert send.context is not None and process.context is not None
    assert process.parent is None
    assert process.context.trace_id != send.context.trace_id
    [link] = process.links
    assert (link.context.trace_id, link.context.span_id) == (send.context.trace_id, send.context.span_id)


async def test_a_failed_run_is_an_error_with_error_type_and_no_exception_event(sdk: Sdk) -> None:
    app = make_app(sdk)

    @app.task
    async def explode() -> None:
        raise ValueError("bad input")

    async with running_worker(app):
        record = await app.add_task("explode", timeout=10)
    assert record.status == "error"
    (process,) = sdk.spans("process default")
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description == "ValueError: bad input"
    attributes = dict(process.attributes or {})
    assert (attributes["error.type"], attributes["qtasks.task.outcome"]) == ("ValueError", "failure")
    assert process.events == (), "exception span events are deprecated; the core logs the traceback"


async def test_record_exception_option_adds_the_exception_event(sdk: Sdk) -> None:
    app = make_app(sdk, record_exception=True)

    class Broken(Exception):
        pass

    @app.task
    async def explode() -> None:
        raise Broken("no")

    async with running_worker(app):
        await app.add_task("explode", timeout=10)
    (process,) = sdk.spans("process default")
    assert [event.name for event in process.events] == ["exception"]
    assert dict(process.attributes or {})["error.type"] == f"{__name__}.{Broken.__qualname__}"


async def test_retries_chain_each_attempt_under_the_send_of_the_one_before(sdk: Sdk) -> None:
    app = make_app(sdk)

    @app.task(retry=2, echo=True)
    async def flaky(self: Any) -> int:
        if self.ctx.attempt < 3:
            raise qtasks.Retry(after=0)
        return int(self.ctx.attempt)

    async with running_worker(app):
        record = await app.add_task("flaky", timeout=10)
    assert (record.status, record.returning) == ("success", 3)
    sends, processes = sdk.by_task(record.id, "send default"), sdk.by_task(record.id, "process default")
    assert [s.attributes["qtasks.task.attempt"] for s in sends] == [1, 2, 3]  # type: ignore[index]
    assert [s.kind for s in sends] == [SpanKind.PRODUCER] * 3, "each send injects its own context"
    assert [p.attributes["qtasks.task.outcome"] for p in processes] == ["retry", "retry", "success"]  # type: ignore[index]
    assert [p.status.status_code for p in processes] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert len({s.context.trace_id for s in [*sends, *processes]}) == 1  # type: ignore[union-attr]
    for attempt in range(3):
        send, process = sends[attempt], processes[attempt]
        assert process.parent.span_id == send.context.span_id and process.parent.is_remote  # type: ignore[union-attr]
    for failed, retry_send in zip(processes[:2], sends[1:], strict=True):
        assert retry_send.parent.span_id == failed.context.span_id  # type: ignore[union-attr]
        assert not retry_send.parent.is_remote, "the retry is sent from inside the failed attempt"  # type: ignore[union-attr]


async def test_a_creation_context_set_by_another_plugin_is_not_overwritten(sdk: Sdk) -> None:
    theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = HeaderRecorder()
    app = make_app(sdk, headers, HeaderSetter(traceparent=theirs))

    @app.task
    async def job() -> None: ...

    async with running_worker(app):
        record = await app.add_task("job", timeout=10)
    assert headers.seen[record.id]["traceparent"] == theirs
    (process,) = sdk.spans("process default")
    assert process.parent is not None and f"{process.parent.span_id:016x}" == "b7ad6b7169203331"


async def test_a_message_submitted_with_its_own_creation_context_is_sent_by_a_client_span_linked_to_it(
    sdk: Sdk,
) -> None:
    """The send span's context is not the creation context, so it is CLIENT, not PRODUCER, and
    links to the creation context the message carries (semconv 1.44 messaging spans, "Span kind"
    and "Producer spans")."""
    theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = HeaderRecorder()
    app = make_app(sdk, headers)

    @app.task
    async def job() -> None: ...

    async with running_worker(app):
        record = await app.submit(Message("job", headers={"traceparent": theirs}))
        await app.wait(record.id, 10)
    assert headers.seen[record.id]["traceparent"] == theirs
    (send,) = sdk.spans("send default")
    assert send.kind is SpanKind.CLIENT
    (link,) = send.links
    assert (f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") == (
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
    )
    assert send.parent is None, "the send span keeps its own (here: no) parent; the link is the correlation"
    (process,) = sdk.spans("process default")
    assert process.parent is not None and f"{process.parent.span_id:016x}" == "b7ad6b7169203331"


async def test_a_message_submitted_with_a_garbage_traceparent_is_sent_by_a_client_span_without_links(
    sdk: Sdk,
) -> None:
    headers = HeaderRecorder()
    app = make_app(sdk, headers)

    @app.task
    async def job() -> None: ...

    async with running_worker(app):
        record = await app.submit(Message("job", headers={"traceparent": "00-not-a-trace-01"}))
        await app.wait(record.id, 10)
    assert headers.seen[record.id]["traceparent"] == "00-not-a-trace-01", "kept, not replaced"
    (send,) = sdk.spans("send default")
    assert send.kind is SpanKind.CLIENT
    assert not send.links


async def test_the_retry_of_a_message_with_its_own_creation_context_is_sent_by_a_producer_span(sdk: Sdk) -> None:
    """A retry replaces the trace context fields with its own send span's, so that span is the
    retry's creation context again: PRODUCER, and the retried attempt is its child."""
    theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = HeaderRecorder()
    app = make_app(sdk, headers)

    @app.task(retry=1, echo=True)
    async def flaky(self: Any) -> None:
        if self.ctx.attempt == 1:
            raise qtasks.Retry(after=0)

    async with running_worker(app):
        record = await app.submit(Message("flaky", headers={"traceparent": theirs}))
        assert (await app.wait(record.id, 10)).status == "success"
    first, retry = sdk.by_task(record.id, "send default")
    assert (first.kind, retry.kind) == (SpanKind.CLIENT, SpanKind.PRODUCER)
    assert not retry.links
    assert headers.seen[record.id]["traceparent"] == traceparent_of(retry)  # the last delivery's headers
    _, second = sdk.by_task(record.id, "process default")
    assert second.parent is not None and second.parent.span_id == retry.context.span_id


async def test_a_task_unknown_to_the_worker_is_rejected_as_an_error(sdk: Sdk) -> None:
    app = make_app(sdk)
    message = Message(name="no_such_task")
    async with running_worker(app):
        await app.publish(message, lambda body: app.broker.publish(app.envelope(message, body)))
        record = await app.wait(message.id, 10)
    assert record.status == "error"
    (process,) = sdk.spans("process default")
    attributes = dict(process.attributes or {})
    assert (attributes["qtasks.task.outcome"], attributes["error.type"]) == ("rejected", "rejected")
    assert "code.function.name" not in attributes
    assert process.status.status_code is StatusCode.ERROR


class ProbeBroker(MemoryBroker):
    """A memory broker that notes, like an instrumented client library would, whether
    instrumentation was suppressed when it was polled and when a lease was extended."""

    def __init__(self) -> None:
        super().__init__()
        self.fetches: list[bool] = []
        self.extends: list[bool] = []
        self.extended = asyncio.Event()

    async def fetch(self, queues: Any, limit: int, lease: float, wait: float) -> list[Any]:
        self.fetches.append(bool(context.get_value(_SUPPRESS_INSTRUMENTATION_KEY)))
        return [ProbeDelivery(self, d) for d in await super().fetch(queues, limit, lease, wait)]


class ProbeDelivery:
    def __init__(self, broker: ProbeBroker, delivery: Any) -> None:
        self._broker, self._delivery = broker, delivery
        self.body, self.count = delivery.body, delivery.count

    async def extend(self, lease: float) -> bool:
        self._broker.extends.append(bool(context.get_value(_SUPPRESS_INSTRUMENTATION_KEY)))
        self._broker.extended.set()
        return bool(await self._delivery.extend(lease))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._delivery, name)


async def test_polling_and_heartbeats_run_suppressed_and_tasks_do_not(sdk: Sdk) -> None:
    broker = ProbeBroker()
    app = make_app(sdk, broker=broker)
    inside: list[bool] = []

    @app.task
    async def outlive_a_heartbeat() -> None:
        await asyncio.wait_for(broker.extended.wait(), 10)
        inside.append(bool(context.get_value(_SUPPRESS_INSTRUMENTATION_KEY)))

    async with running_worker(app, lease=0.2):
        record = await app.add_task("outlive_a_heartbeat", timeout=20)
    assert record.status == "success"
    assert broker.fetches and all(broker.fetches), "every poll ran with instrumentation suppressed"
    assert broker.extends and all(broker.extends), "every lease renewal too"
    assert inside == [False], "a task never inherits the suppression"
    assert sorted(s.name for s in sdk.spans()) == ["process default", "send default"]
    assert dict(sdk.spans("send default")[0].attributes or {})["messaging.system"] == "probe"


class RefuseEverything:
    """An argument-validation plugin that refuses every run while entering its context."""

    @qtasks.hookimpl
    def qtasks_execution_context(self, run: Any) -> Any:
        return self.refuse()

    @contextmanager
    def refuse(self) -> Iterator[None]:
        raise PermissionError("not allowed")
        yield


async def test_a_run_refused_by_another_execution_context_is_still_traced(sdk: Sdk) -> None:
    app = make_app(sdk, RefuseEverything())

    @app.task
    async def job() -> None: ...

    async with running_worker(app):
        record = await app.add_task("job", timeout=10)
    assert record.status == "error"
    (process,) = sdk.spans("process default")
    attributes = dict(process.attributes or {})
    assert (attributes["qtasks.task.outcome"], attributes["error.type"]) == ("rejected", "PermissionError")
    assert process.status.description == "PermissionError: not allowed"


async def test_a_run_interrupted_by_a_stopping_worker_is_an_error_and_no_longer_active(sdk: Sdk) -> None:
    app = make_app(sdk)
    started = asyncio.Event()

    @app.task
    async def endless() -> None:
        started.set()
        await asyncio.Event().wait()

    async with app:
        async with running_worker(app, grace=0):
            await app.add_task("endless")
            await asyncio.wait_for(started.wait(), 10)
        (process,) = sdk.spans("process default")
    attributes = dict(process.attributes or {})
    assert (attributes["qtasks.task.outcome"], attributes["error.type"]) == (
        "interrupted",
        "asyncio.exceptions.CancelledError",
    )
    assert process.status.status_code is StatusCode.ERROR
    [active] = sdk.points("qtasks.task.active")
    assert active.value == 0


async def test_a_worker_inside_a_span_links_to_it_but_parents_to_the_send_span(sdk: Sdk) -> None:
    app = make_app(sdk)

    @app.task
    async def job() -> None: ...

    with sdk.tracer_provider.get_tracer("test").start_as_current_span("embedding app") as ambient:
        async with running_worker(app):
            await app.add_task("job", timeout=10)
    (send,) = sdk.spans("send default")
    (process,) = sdk.spans("process default")
    assert process.parent is not None and send.context is not None
    assert process.parent.span_id == send.context.span_id
    linked = [link.context.span_id for link in process.links]
    assert linked == [send.context.span_id, ambient.get_span_context().span_id]
