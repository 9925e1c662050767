"""The blocking facade (qtasks.QueueTasks), routers without an app, shared tasks, pre-built calls."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import qtasks
from qtasks import QueueTasks, Router, TaskTimeoutError, shared_task
from qtasks.asyncio import AsyncRouter
from qtasks.asyncio import QueueTasks as AsyncQueueTasks
from qtasks.testing import in_memory_worker


@pytest.fixture
def app(sqlite_url: str) -> Any:
    app = QueueTasks(broker=sqlite_url)

    @app.task
    def echo(text: str) -> str:
        return text

    @app.task
    def submit_nested(x: int) -> int:  # a sync task using the blocking API inside the worker
        return echo.add_task(str(x), timeout=5).returning == str(x) and x * 10  # type: ignore[no-any-return]

    yield app
    app.stop()


def test_blocking_api_round_trip(app: Any) -> None:
    with in_memory_worker(app):
        echo = app.tasks["echo"]
        record = app.add_task("echo", "Hello", timeout=5)
        assert (record.status, record.returning) == ("success", "Hello")
        queued = app.add_task("echo", "later")
        assert queued.status == "new"
        assert app.wait(queued.id, 5).returning == "later"
        assert app.get(queued.id).status == "success"
        assert echo.name == "echo"


def test_sync_task_can_submit_tasks_with_the_blocking_api(app: Any) -> None:
    with in_memory_worker(app):
        assert app.add_task("submit_nested", 4, timeout=10).returning == 40


def test_blocking_api_inside_a_running_loop_is_refused_clearly(app: Any) -> None:
    async def misuse() -> None:
        app.add_task("echo", "x")

    with pytest.raises(RuntimeError, match="await the async API instead"):
        asyncio.run(misuse())


def test_timeout_carries_the_id(app: Any) -> None:
    record = None
    with pytest.raises(TaskTimeoutError) as err:
        record = app.add_task("echo", "nobody runs me", timeout=0.2)
    assert record is None and len(err.value.task_id) == 36
    assert app.get(err.value.task_id).status == "new"


def test_router_task_without_an_app_uses_a_client_app_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("QTASKS_BROKER", url)
    router = AsyncRouter()

    @router.task()
    async def example_task(x: int, y: int) -> int:
        return x + y

    server = AsyncQueueTasks(broker=url)  # the worker side, as a separate app
    server.include_router(AsyncRouter())  # unrelated router: it does not know example_task
    server._register(example_task.spec)

    async def scenario() -> int:
        from qtasks.testing import running_worker

        async with running_worker(server):
            record = await example_task.add_task(1, 2, timeout=10)  # goes through router's client app
        client = router._task_app()
        assert client is not server and client.name == "QueueTasks"
        await client.stop()
        return record.returning  # type: ignore[no-any-return]

    assert asyncio.run(scenario()) == 3


def test_sync_router_and_prebuilt_calls(app: Any) -> None:
    router = Router()

    @router.task
    def add(a: int, b: int) -> int:
        return a + b

    app.include_router(router)
    with in_memory_worker(app):
        call = add(1)
        assert isinstance(call, qtasks.TaskCall) and call.args == (1,)
        assert call.add_task(41, timeout=5).returning == 42, "extra args are appended"
        assert add.add_task(2, 3, timeout=5).returning == 5


def test_shared_task_is_seen_by_any_app(sqlite_url: str) -> None:
    @shared_task(name="shared_double_for_test")
    async def double(x: int) -> int:
        return 2 * x

    app = AsyncQueueTasks(broker="memory", storage="memory")
    assert "shared_double_for_test" in app.known_tasks()
    assert isinstance(double, qtasks.AsyncTask)

    async def scenario() -> int:
        from qtasks.testing import running_worker

        async with running_worker(app):
            return (await double.add_task(21, timeout=5)).returning  # type: ignore[no-any-return]

    assert asyncio.run(scenario()) == 42
    qtasks.tasks.shared_tasks_router().tasks.pop("shared_double_for_test")
