"""Real worker processes on Kafka (Tansu): a task that kills every worker that runs it is dead
lettered. Nothing here is mocked: the processes are ``python -m qtasks worker``, the server is a
real one, and the results are kept in an SQLite file shared by the processes. What every backend
does (SIGKILL, SIGTERM, sharing) is tested on this one too, in tests/backends/test_processes.py."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.backends.kit import Backend, make_project, runs, start_worker

pytestmark = [pytest.mark.kafka, pytest.mark.integration]


async def test_a_task_that_kills_its_workers_is_dead_lettered_after_max_deliveries(
    tmp_path: Path, spawn: Any, kafka_app_url: str
) -> None:
    """Kafka keeps no delivery count; the hand-out records of the control log carry it from
    one owner of the partition to the next."""
    project, backend = make_project(tmp_path), Backend("kafka", kafka_app_url, storage="sqlite")
    app = backend.app()
    record = await app.add_task("poison")
    for attempt in (1, 2):
        worker = start_worker(spawn, backend, name=f"killed{attempt}", QTASKS_MAX_DELIVERIES="2")
        assert worker.popen.wait(60) == -signal.SIGKILL
        assert len(runs(project, "poison")) == attempt
    last = start_worker(spawn, backend, name="last", QTASKS_MAX_DELIVERIES="2")
    final = await app.wait(record.id, 60)
    assert final.status == "dead" and "delivered 3 times" in (final.reason or "")
    assert len(runs(project, "poison")) == 2, "not run a third time"
    (dead,) = await app.dead_letters()
    assert dead.queue == "default" and "max_deliveries" in dead.reason
    assert last.popen.poll() is None
    await app.stop()
