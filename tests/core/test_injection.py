"""Built-in plugins: Depends, State and pydantic-validated arguments, on sync and async tasks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import pydantic
import pytest
from qtasks import Depends, State
from qtasks.asyncio import QueueTasks
from qtasks.testing import running_worker
from qtasks.worker import Worker


@pytest.fixture
async def app() -> AsyncIterator[QueueTasks]:
    async with QueueTasks(broker="memory", storage="memory") as app:
        yield app


EVENTS: list[str] = []


async def connection() -> AsyncIterator[str]:  # module level, so string annotations resolve
    EVENTS.append("open")
    yield "conn"
    EVENTS.append("close")


@contextmanager
def session() -> Iterator[str]:
    EVENTS.append("session")
    yield "sess"
    EVENTS.append("session-closed")


async def test_task_scope_dependency_opens_before_and_closes_after_even_on_error(app: QueueTasks) -> None:
    # this module uses `from __future__ import annotations`: the Annotated form is a string here
    EVENTS.clear()

    @app.task
    async def uses(x: int, conn: str = Depends(connection), s: Annotated[str, Depends(session)] = "") -> str:
        EVENTS.append(f"body {conn} {s}")
        if x < 0:
            raise ValueError("negative")
        return f"{conn}:{s}:{x}"

    async with running_worker(app):
        assert (await uses.add_task(1, timeout=5)).returning == "conn:sess:1"
        assert (await uses.add_task(-1, timeout=5)).status == "error"
    assert EVENTS == ["open", "session", "body conn sess", "session-closed", "close"] * 2


async def test_worker_scope_dependency_is_created_once_and_closed_at_stop(app: QueueTasks) -> None:
    events: list[str] = []

    def pool() -> Iterator[str]:
        events.append("pool-open")
        yield "pool"
        events.append("pool-closed")

    @app.task
    def query(n: int, db: str = Depends(pool, scope="worker")) -> str:  # a sync task, in a thread
        return f"{db}{n}"

    worker = Worker(app)
    job = asyncio.create_task(worker.run())
    await worker.ready.wait()
    results = await asyncio.gather(*(query.add_task(i, timeout=5) for i in range(5)))
    assert [r.returning for r in results] == [f"pool{i}" for i in range(5)]
    assert events == ["pool-open"]
    worker.stop()
    await job
    assert events == ["pool-open", "pool-closed"]


class Conversation(State):
    """Module level, so the string annotations below resolve."""


async def test_state_is_shared_by_the_tasks_of_a_worker(app: QueueTasks) -> None:
    @app.task
    async def step1(state: Conversation) -> None:
        state.set("state", "await_phone")
        state.update(step=1, prompt="Enter phone number")

    @app.task
    def step2(state: Conversation) -> dict[str, Any]:
        seen = state.get_all()
        state.clear()
        return seen  # type: ignore[no-any-return]

    @app.task
    def step3(state: Conversation) -> dict[str, Any]:
        return state.get()  # type: ignore[no-any-return]

    async with running_worker(app):
        await step1.add_task(timeout=5)
        assert (await step2.add_task(timeout=5)).returning == {
            "state": "await_phone",
            "step": 1,
            "prompt": "Enter phone number",
        }
        assert (await step3.add_task(timeout=5)).returning == {}


class Item(pydantic.BaseModel):
    name: str
    value: int


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_pydantic_models_from_every_call_style(app: QueueTasks, kind: str) -> None:
    if kind == "async":

        @app.task(name="greet")
        async def greet(item: Item) -> str:
            return f"Hello, {item.name} {item.value}!"
    else:

        @app.task(name="greet")
        def greet(item: Item) -> str:
            return f"Hello, {item.name} {item.value}!"

    async with running_worker(app):
        for args, kwargs in [
            (("Test",), {"value": 42}),
            (("Test", 42), {}),
            ((), {"name": "Test", "value": 42}),
            (({"name": "Test", "value": "42"},), {}),
            ((Item(name="Test", value=42),), {}),
        ]:
            record = await app.add_task("greet", *args, timeout=5, **kwargs)
            assert (record.status, record.returning) == ("success", "Hello, Test 42!"), (args, kwargs)


async def test_model_results_are_stored_as_dicts_and_bad_arguments_are_rejected_not_retried(app: QueueTasks) -> None:
    calls = 0

    @app.task(retry=3)
    async def make(item: Item) -> Item:
        nonlocal calls
        calls += 1
        return Item(name=item.name.upper(), value=item.value + 1)

    async with running_worker(app):
        assert (await make.add_task("a", 1, timeout=5)).returning == {"name": "A", "value": 2}
        bad = await make.add_task("a", "not a number", timeout=5)
    assert bad.status == "error" and bad.attempt == 1 and calls == 1
    assert "ValidationError" in bad.traceback and "value" in bad.traceback


async def test_validate_option_checks_plain_annotations(app: QueueTasks) -> None:
    @app.task(validate=True)
    async def add(a: int, b: int) -> int:
        return a + b

    async with running_worker(app):
        assert (await add.add_task("2", 3, timeout=5)).returning == 5
        assert (await add.add_task("two", 3, timeout=5)).status == "error"
