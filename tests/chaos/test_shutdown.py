"""SIGTERM to a busy worker: everything it held finishes or goes back; nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from qtasks.asyncio import QueueTasks

from tests.chaos.harness import CHAOS_APP, executions
from tests.conftest import qtasks_cli

pytestmark = pytest.mark.integration


async def test_sigterm_on_a_busy_worker_loses_and_duplicates_nothing(tmp_path: Path, spawn: Any) -> None:
    (tmp_path / "chaos_app.py").write_text(CHAOS_APP)
    (tmp_path / "runs").mkdir()
    argv = qtasks_cli("worker", "-A", "chaos_app:app", "-c", "8", "--grace", "30", "--log-format", "json")
    first = spawn(argv, name="first")
    first.wait_for("worker.started")
    app = QueueTasks()
    records = [await app.add_task("job", i, 0.3) for i in range(60)]
    while len(executions(tmp_path)) < 8:  # the worker is busy with a full set of tasks
        await asyncio.sleep(0.02)
    first.signal(signal.SIGTERM)
    assert first.popen.wait(60) == 0
    assert "worker.draining" in first.output
    started_by_first = len(executions(tmp_path))
    assert 8 <= started_by_first < 60, "it stopped fetching and finished what it held"
    second = spawn(argv, name="second")
    finals = [await app.wait(r.id, 60) for r in records]
    assert [f.status for f in finals] == ["success"] * 60
    runs = Counter(index for index, pids in executions(tmp_path).items() for _ in pids)
    assert set(runs.values()) == {1}, "nothing ran twice"
    assert second.stop() == 0
    await app.stop()
