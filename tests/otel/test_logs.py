"""The structlog processor: log lines inside a task carry that task's trace and span ids."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import qtasks_otel
import structlog
from qtasks.asyncio import QueueTasks
from qtasks.testing import running_worker
from structlog.testing import LogCapture

from tests.otel.kit import Sdk, ids_of


@pytest.fixture
def captured() -> Iterator[LogCapture]:
    """structlog configured as an app would, with the processor; restored afterwards."""
    capture = LogCapture()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, qtasks_otel.add_trace_ids, capture],
        cache_logger_on_first_use=False,
    )
    yield capture
    structlog.reset_defaults()


async def test_lines_logged_in_concurrent_tasks_carry_their_own_span(sdk: Sdk, captured: LogCapture) -> None:
    app = QueueTasks(broker="memory", storage="memory", plugins=[sdk.plugin()])
    both_running = asyncio.Barrier(2)

    @app.task
    async def chatty(tag: str) -> None:
        log = structlog.get_logger("tasks")
        log.info("before", tag=tag)
        await asyncio.wait_for(both_running.wait(), 10)  # the two runs interleave here
        log.info("after", tag=tag)

    @app.task
    async def explode() -> None:
        raise RuntimeError("boom")

    structlog.get_logger("test").info("outside")
    async with running_worker(app):
        records = await asyncio.gather(app.add_task("chatty", "a"), app.add_task("chatty", "b"))
        for record in records:
            await app.wait(record.id, 10)
        failed = await app.add_task("explode", timeout=10)
    spans = {dict(s.attributes or {})["qtasks.task.id"]: ids_of(s) for s in sdk.spans("process default")}
    assert len({ids["trace_id"] for ids in spans.values()}) == 3

    lines = captured.entries
    outside = next(line for line in lines if line["event"] == "outside")
    assert "trace_id" not in outside and "span_id" not in outside
    mine = [line for line in lines if line["event"] in ("before", "after")]
    assert len(mine) == 4
    for line in mine:
        assert {"trace_id": line["trace_id"], "span_id": line["span_id"]} == spans[line["task_id"]]
    # qtasks' own line about the failed run is logged inside the run, so it is correlated too
    finished = next(line for line in lines if line["event"] == "task.finished" and line["task_id"] == failed.id)
    assert {"trace_id": finished["trace_id"], "span_id": finished["span_id"]} == spans[failed.id]


def test_ids_a_line_already_carries_are_kept(sdk: Sdk) -> None:
    with sdk.tracer_provider.get_tracer("test").start_as_current_span("work") as span:
        line = qtasks_otel.add_trace_ids(None, "info", {"event": "x", "trace_id": "mine"})
    assert line == {"event": "x", "trace_id": "mine", "span_id": f"{span.get_span_context().span_id:016x}"}
