"""Real worker processes on the embedded SQLite default: SIGTERM, grace, sync tasks, supervision.
What every backend does (SIGKILL, sharing, ...) is tested on this one too, in
tests/backends/test_processes.py."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from qtasks.asyncio import QueueTasks

from tests.backends import kit
from tests.conftest import qtasks_cli

pytestmark = pytest.mark.integration

#: the shared tasks module, plus a sync task that blocks its thread
TASKS = (
    kit.TASKS
    + """
@app.task
def blocking(seconds: float, tag: str) -> int:
    mark(tag)
    time.sleep(seconds)
    return os.getpid()
"""
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    kit.make_project(tmp_path)
    (tmp_path / "tasks_app.py").write_text(TASKS)
    return tmp_path


def worker(spawn: Any, *extra: str, name: str = "worker") -> Any:
    return kit.start_worker(spawn, kit.Backend("sqlite"), *extra, name=name)


runs = kit.runs


async def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    await kit.eventually(predicate, timeout)


async def test_sigterm_drains_running_work(project: Path, spawn: Any) -> None:
    proc = worker(spawn, "--grace", "10")
    app = QueueTasks()
    records = [await app.add_task("sleepy", 1.0, f"drain{i}") for i in range(3)]
    await wait_until(lambda: len(list((project / "runs").glob("drain*"))) == 3)
    proc.signal(signal.SIGTERM)
    assert proc.popen.wait(20) == 0
    assert "worker.draining" in proc.output
    for record in records:
        final = await app.get(record.id)
        assert final is not None and final.status == "success"
    await app.stop()


async def test_sigterm_past_grace_returns_the_task_for_another_worker(project: Path, spawn: Any) -> None:
    first = worker(spawn, "--grace", "0.5", name="first")
    app = QueueTasks()
    record = await app.add_task("sleepy", 4, "returned")
    await wait_until(lambda: runs(project, "returned"))
    first.signal(signal.SIGTERM)
    assert first.popen.wait(20) == 0
    assert (await app.get(record.id)).status == "running"  # type: ignore[union-attr]
    second = worker(spawn, name="second")
    final = await app.wait(record.id, 20)
    assert final.status == "success" and final.returning == second.popen.pid
    assert [pid for pid, _ in runs(project, "returned")] == [first.popen.pid, second.popen.pid]
    await app.stop()


async def test_sync_task_does_not_stall_async_ones_in_a_worker_process(project: Path, spawn: Any) -> None:
    worker(spawn)
    app = QueueTasks()
    slow = await app.add_task("blocking", 3, "blocker")
    await wait_until(lambda: runs(project, "blocker"))
    quick = await app.add_task("quick", 0, timeout=2)
    assert quick.status == "success"
    assert (await app.get(slow.id)).status == "running"  # type: ignore[union-attr]
    assert (await app.wait(slow.id, 10)).status == "success"
    await app.stop()


async def test_supervised_pool_restarts_a_killed_process(project: Path, spawn: Any) -> None:
    pool = spawn(qtasks_cli("worker", "-A", "tasks_app:app", "--processes", "2", "--log-format", "json"), name="pool")
    await wait_until(lambda: pool.output.count("worker.started") >= 2)
    app = QueueTasks()
    first = [(await app.add_task("quick", i, timeout=10)).returning for i in range(20)]
    children = set(first)
    victim = first[0]
    os.kill(victim, signal.SIGKILL)
    await wait_until(lambda: pool.output.count("worker.started") >= 3)
    assert "supervisor.child_died" in pool.output
    later = [(await app.add_task("quick", i, timeout=10)).returning for i in range(20)]
    assert victim not in later
    pool.signal(signal.SIGTERM)
    assert pool.popen.wait(20) == 0
    assert children <= set(first)
    await app.stop()


async def test_qtasks_run_spelling_still_works(project: Path, spawn: Any) -> None:
    proc = spawn(qtasks_cli("-A", "tasks_app:app", "run", "--log-format", "json"), name="run")
    proc.wait_for("worker.started")
    app = QueueTasks()
    assert (await app.add_task("quick", 0, timeout=10)).returning == proc.popen.pid
    await app.stop()
