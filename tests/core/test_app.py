"""The QTasks API on the asyncio app: submit, wait, get, errors at the client."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from qtasks import Status, TaskTimeoutError, UnknownTaskError
from qtasks.asyncio import AsyncRouter, QueueTasks
from qtasks.errors import CapabilityError, PayloadTooLarge
from qtasks.protocols import DELAY, PRIORITY
from qtasks.testing import running_worker


@pytest.fixture
def app() -> QueueTasks:
    app = QueueTasks(broker="memory", storage="memory")

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="slow")
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    @app.task
    def divide(a: float, b: float) -> float:
        return a / b

    return app


async def test_add_task_without_timeout_returns_a_new_record_at_once(app: QueueTasks) -> None:
    record = await app.add_task("add", 1, 2)
    assert record.status == Status.NEW == "new"
    assert uuid.UUID(record.id) == record.uuid
    assert (record.name, record.task_name, record.args, record.kwargs) == ("add", "add", [1, 2], {})
    stored = await app.get(record.id)
    assert stored is not None and stored.status == "new"


async def test_add_task_with_timeout_waits_for_the_result(app: QueueTasks) -> None:
    async with running_worker(app):
        record = await app.add_task("add", 2, b=3, timeout=5)
        assert (record.status, record.returning, record.traceback) == ("success", 5, None)
        error = await app.add_task("divide", 1, 0, timeout=5)
        assert error.status == "error" and error.returning is None
        assert error.traceback.strip().endswith("ZeroDivisionError: division by zero")
        assert "divide" in error.traceback and "qtasks/worker.py" not in error.traceback


async def test_timeout_raises_with_the_id_and_the_result_comes_later(app: QueueTasks) -> None:
    async with running_worker(app):
        with pytest.raises(TaskTimeoutError) as err:
            await app.add_task("slow", 0.5, timeout=0.1)
        task_id = err.value.task_id
        assert task_id in str(err.value)
        running = await app.get(task_id)
        assert running is not None and running.status == "running"
        final = await app.wait(task_id, timeout=5)
        assert (final.status, final.returning) == ("success", "done")


async def test_get_unknown_id_is_none(app: QueueTasks) -> None:
    assert await app.get(uuid.uuid4()) is None


async def test_unknown_task_name_fails_at_submit(app: QueueTasks) -> None:
    with pytest.raises(UnknownTaskError, match=r"unknown task 'ad'\. Did you mean 'add'"):
        await app.add_task("ad", 1, 2)


async def test_unserializable_argument_is_a_type_error_naming_it(app: QueueTasks) -> None:
    with pytest.raises(TypeError, match="argument 'b' of task 'add' cannot be serialized"):
        await app.add_task("add", 1, object())
    with pytest.raises(TypeError, match="argument 'extra' of task 'add'"):
        await app.add_task("add", 1, 2, extra=lambda: None)
    assert await app.broker.depth("default") == 0, "nothing half-sent"


async def test_common_types_are_encoded_not_rejected(app: QueueTasks) -> None:
    from datetime import datetime

    async with running_worker(app):
        record = await app.add_task("add", "x", str(uuid.UUID(int=1)), timeout=5)
        assert record.returning == "x00000000-0000-0000-0000-000000000001"
        when = datetime(2026, 1, 2, 3, 4, 5)
        record = await app.add_task("add", when, "!", timeout=5)
        assert record.returning == "2026-01-02T03:04:05!"


async def test_oversized_payload_is_refused(app: QueueTasks) -> None:
    app.config.max_payload = 1000
    with pytest.raises(PayloadTooLarge, match="over the limit of 1000 bytes"):
        await app.add_task("add", "x" * 2000, "y")


async def test_duplicate_task_names_fail_at_declaration(app: QueueTasks) -> None:
    with pytest.raises(ValueError, match="'add' is already registered"):

        @app.task(name="add")
        async def other(a: int) -> int:
            return a


async def test_broker_without_a_capability_fails_loudly(app: QueueTasks) -> None:
    await app.start()
    app.broker.capabilities = frozenset()
    with pytest.raises(CapabilityError, match="does not support priorities"):
        await app.add_task("add", 1, 2, priority=3)
    with pytest.raises(CapabilityError, match="delays"):
        await app.add_task("add", 1, 2, delay=5)
    app.broker.capabilities = frozenset({PRIORITY, DELAY})


async def test_routers_and_include_router() -> None:
    router = AsyncRouter()

    @router.task
    async def double(x: int) -> int:
        return 2 * x

    @router.task(name="triple", priority=2)
    async def triple(x: int) -> int:
        return 3 * x

    app = QueueTasks(broker="memory", storage="memory")
    app.include_router(router)

    @router.task
    async def late(x: int) -> int:  # declared after the include: still seen
        return x

    assert set(app.tasks) == {"double", "triple", "late"} and app.tasks["triple"].priority == 2
    async with running_worker(app):
        assert (await double.add_task(21, timeout=5)).returning == 42
        assert (await triple.add_task(2, timeout=5)).returning == 6
        assert (await late.add_task(7, timeout=5)).returning == 7


async def test_the_app_is_reachable_from_another_event_loop(app: QueueTasks) -> None:
    async with running_worker(app):

        def in_other_loop() -> int:
            async def submit() -> int:
                return (await app.add_task("add", 20, 22, timeout=5)).returning  # type: ignore[no-any-return]

            return asyncio.run(submit())

        assert await asyncio.to_thread(in_other_loop) == 42


async def test_round_trip_is_not_bound_to_a_polling_interval(app: QueueTasks) -> None:
    async with running_worker(app):
        await app.add_task("add", 0, 0, timeout=5)
        start = time.perf_counter()
        for i in range(20):
            assert (await app.add_task("add", i, 1, timeout=5)).returning == i + 1
        assert (time.perf_counter() - start) / 20 < 0.1
