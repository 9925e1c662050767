"""Real worker processes on the embedded SQLite default: kill -9, SIGTERM, sharing, supervision."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from qtasks.asyncio import QueueTasks

from tests.conftest import qtasks_cli

pytestmark = pytest.mark.integration

TASKS = """
import asyncio, os, time
from pathlib import Path
from qtasks.asyncio import QueueTasks

app = QueueTasks()

def mark(tag):
    Path("runs").mkdir(exist_ok=True)
    (Path("runs") / f"{tag}.{os.getpid()}.{time.time_ns()}").touch()

@app.task
async def sleepy(seconds: float, tag: str) -> int:
    mark(tag)
    await asyncio.sleep(seconds)
    return os.getpid()

@app.task
def blocking(seconds: float, tag: str) -> int:
    mark(tag)
    time.sleep(seconds)
    return os.getpid()

@app.task
async def quick(tag: str) -> int:
    mark(tag)
    return os.getpid()
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "tasks_app.py").write_text(TASKS)
    return tmp_path


def runs(project: Path, tag: str) -> list[tuple[int, int]]:
    """(pid, start time ns) of every execution of the task tagged ``tag``."""
    found = [p.name.split(".") for p in (project / "runs").glob(f"{tag}.*")] if (project / "runs").exists() else []
    return sorted((int(pid), int(ns)) for _, pid, ns in found)


def worker(spawn: Any, *extra: str, name: str = "worker") -> Any:
    proc = spawn(qtasks_cli("worker", "-A", "tasks_app:app", "--log-format", "json", *extra), name=name)
    proc.wait_for("worker.started")
    return proc


async def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_sigkilled_worker_has_its_task_run_by_another_within_seconds(project: Path, spawn: Any) -> None:
    first = worker(spawn, "--lease", "1", name="first")
    app = QueueTasks()
    record = await app.add_task("sleepy", 3, "victim")
    await wait_until(lambda: runs(project, "victim"))
    assert runs(project, "victim")[0][0] == first.popen.pid
    second = worker(spawn, "--lease", "1", name="second")
    first.signal(signal.SIGKILL)
    killed = time.time_ns()
    final = await app.wait(record.id, 20)
    assert final.status == "success" and final.returning == second.popen.pid
    (_, _), (pid, second_start) = runs(project, "victim")
    assert pid == second.popen.pid
    assert (second_start - killed) / 1e9 < 4.0, "redelivered within a few seconds of the kill"
    await app.stop()


async def test_sigterm_drains_running_work(project: Path, spawn: Any) -> None:
    proc = worker(spawn, "--grace", "10")
    app = QueueTasks()
    records = [await app.add_task("sleepy", 1.0, f"drain{i}") for i in range(3)]
    await wait_until(
        lambda: len(list((project / "runs").glob("drain*"))) == 3 if (project / "runs").exists() else False
    )
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


async def test_two_workers_share_the_work_without_duplicates(project: Path, spawn: Any) -> None:
    one, two = worker(spawn, "-c", "4", name="one"), worker(spawn, "-c", "4", name="two")
    app = QueueTasks()
    records = [await app.add_task("sleepy", 0.05, f"share{i}") for i in range(60)]
    results = [await app.wait(r.id, 30) for r in records]
    assert all(r.status == "success" for r in results)
    assert {r.returning for r in results} == {one.popen.pid, two.popen.pid}, "both workers took part"
    executions = [runs(project, f"share{i}") for i in range(60)]
    assert all(len(e) == 1 for e in executions), "every task ran exactly once"
    await app.stop()


async def test_sync_task_does_not_stall_async_ones_in_a_worker_process(project: Path, spawn: Any) -> None:
    worker(spawn)
    app = QueueTasks()
    slow = await app.add_task("blocking", 3, "blocker")
    await wait_until(lambda: runs(project, "blocker"))
    quick = await app.add_task("quick", "q", timeout=2)
    assert quick.status == "success"
    assert (await app.get(slow.id)).status == "running"  # type: ignore[union-attr]
    assert (await app.wait(slow.id, 10)).status == "success"
    await app.stop()


async def test_supervised_pool_restarts_a_killed_process(project: Path, spawn: Any) -> None:
    pool = spawn(qtasks_cli("worker", "-A", "tasks_app:app", "--processes", "2", "--log-format", "json"), name="pool")
    await wait_until(lambda: pool.output.count("worker.started") >= 2)
    app = QueueTasks()
    first = [(await app.add_task("quick", f"before{i}", timeout=10)).returning for i in range(20)]
    children = set(first)
    victim = first[0]
    os.kill(victim, signal.SIGKILL)
    await wait_until(lambda: pool.output.count("worker.started") >= 3)
    assert "supervisor.child_died" in pool.output
    later = [(await app.add_task("quick", f"after{i}", timeout=10)).returning for i in range(20)]
    assert victim not in later
    pool.signal(signal.SIGTERM)
    assert pool.popen.wait(20) == 0
    assert children <= set(first)
    await app.stop()


async def test_qtasks_run_spelling_still_works(project: Path, spawn: Any) -> None:
    proc = spawn(qtasks_cli("-A", "tasks_app:app", "run", "--log-format", "json"), name="run")
    proc.wait_for("worker.started")
    app = QueueTasks()
    assert (await app.add_task("quick", "compat", timeout=10)).returning == proc.popen.pid
    await app.stop()
