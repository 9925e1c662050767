"""The pytest plugin shipped in qtasks.testing, used as a user would."""

from __future__ import annotations

from typing import Any

import pytest
from qtasks import QueueTasks
from qtasks.builtin.memory import MemoryBroker

app = QueueTasks(broker="sqlite:///never-created.db")


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task
async def fail() -> None:
    raise RuntimeError("expected")


@pytest.fixture
def qtasks_app() -> Any:
    return app


def test_user_tasks_run_in_memory_with_no_server(qtasks_worker: Any) -> None:
    record = add.add_task(1, 2, timeout=5)
    assert (record.status, record.returning) == ("success", 3)
    assert isinstance(app.core.broker, MemoryBroker)
    assert app.add_task("fail", timeout=5).status == "error"


async def test_async_tests_use_the_same_worker(qtasks_worker: Any) -> None:
    record = await app.core.add_task("add", 2, 2, timeout=5)
    assert record.returning == 4


def test_the_app_configuration_is_restored_afterwards(qtasks_worker: Any) -> None:
    assert app.core._wanted["broker"] == "memory"


def test_after_the_fixture_the_app_is_back_to_its_own_components() -> None:
    assert app.core._wanted["broker"] == "sqlite:///never-created.db"
