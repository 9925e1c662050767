"""pytest plugin (entry point ``pytest11``): fixtures for testing tasks without a server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def qtasks_app() -> Any:
    """Override this fixture to return the app under test."""
    raise pytest.UsageError("define a `qtasks_app` fixture that returns your QueueTasks app")


@pytest.fixture
def qtasks_worker(qtasks_app: Any) -> Iterator[Any]:
    """A worker for ``qtasks_app`` on the memory components, running while the test runs."""
    from qtasks.testing import in_memory_worker

    with in_memory_worker(qtasks_app, lease=2.0, grace=5.0) as worker:
        yield worker
