"""Real worker processes on PostgreSQL: SIGKILL, lease renewal, two workers sharing, a server
crash. Nothing here is mocked: the processes are ``python -m qtasks worker`` and the server is a
real one."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from qtasks.asyncio import QueueTasks

from tests.conftest import qtasks_cli
from tests.postgres.conftest import eventually
from tests.servers import postgres_server

pytestmark = pytest.mark.integration

TASKS = """
import asyncio, os, time
from pathlib import Path
from qtasks.asyncio import QueueTasks

app = QueueTasks()  # QTASKS_BROKER=postgresql://...

def mark(tag):
    Path("runs").mkdir(exist_ok=True)
    (Path("runs") / f"{tag}.{os.getpid()}.{time.time_ns()}").touch()

@app.task
async def sleepy(seconds: float, tag: str) -> int:
    mark(tag)
    await asyncio.sleep(seconds)
    return os.getpid()
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "tasks_app.py").write_text(TASKS)
    (tmp_path / "runs").mkdir()
    return tmp_path


def runs(project: Path, tag: str) -> list[tuple[int, int]]:
    """(pid, start time ns) of every execution of the task tagged ``tag``."""
    found = [p.name.split(".") for p in (project / "runs").glob(f"{tag}.*")]
    return sorted((int(pid), int(ns)) for _, pid, ns in found)


def start_worker(spawn: Any, url: str, *extra: str, name: str = "worker") -> Any:
    argv = qtasks_cli("worker", "-A", "tasks_app:app", "--log-format", "json", *extra)
    proc = spawn(argv, env={"QTASKS_BROKER": url}, name=name)
    proc.wait_for("worker.started")
    return proc


async def test_sigkilled_worker_has_its_task_run_by_another(project: Path, spawn: Any, postgres_app_url: str) -> None:
    first = start_worker(spawn, postgres_app_url, "--lease", "1", name="first")
    app = QueueTasks(broker=postgres_app_url)
    record = await app.add_task("sleepy", 2, "victim")
    await eventually(lambda: runs(project, "victim"), what="the first run")
    assert runs(project, "victim")[0][0] == first.popen.pid
    second = start_worker(spawn, postgres_app_url, "--lease", "1", name="second")
    first.signal(signal.SIGKILL)
    final = await app.wait(record.id, 30)
    assert final.status == "success" and final.returning == second.popen.pid
    (first_pid, _), (second_pid, _) = runs(project, "victim")
    assert (first_pid, second_pid) == (first.popen.pid, second.popen.pid)
    await app.stop()


async def test_a_task_longer_than_its_lease_runs_once_and_workers_share(
    project: Path, spawn: Any, postgres_app_url: str
) -> None:
    workers = [start_worker(spawn, postgres_app_url, "--lease", "0.5", "-c", "4", name=f"w{i}") for i in range(2)]
    app = QueueTasks(broker=postgres_app_url)
    long = await app.add_task("sleepy", 2.0, "long")  # four leases long: renewed meanwhile
    short = [await app.add_task("sleepy", 0.05, f"share{i}") for i in range(40)]
    results = [await app.wait(r.id, 30) for r in short]
    final = await app.wait(long.id, 30)
    assert final.status == "success"
    assert [pid for pid, _ in runs(project, "long")] == [final.returning], "ran once, by one worker"
    assert all(r.status == "success" for r in results)
    assert {r.returning for r in results} == {w.popen.pid for w in workers}, "both workers took part"
    assert all(len(runs(project, f"share{i}")) == 1 for i in range(40)), "every task ran exactly once"
    await app.stop()


async def test_worker_survives_a_postgres_crash_and_loses_no_acknowledged_result(project: Path, spawn: Any) -> None:
    with postgres_server() as server:
        worker = start_worker(spawn, server.url, "--lease", "2", "-c", "8", name="survivor")
        app = QueueTasks(broker=server.url)
        before = [await app.add_task("sleepy", 0.01, f"before{i}") for i in range(20)]
        done_before = [await app.wait(r.id, 20) for r in before]
        assert all(r.status == "success" for r in done_before)
        in_flight = [await app.add_task("sleepy", 1.0, f"during{i}") for i in range(8)]
        await eventually(lambda: list((project / "runs").glob("during*")), what="tasks running at the crash")

        server.restart(down_for=1.0, sig=signal.SIGQUIT)  # immediate shutdown: a crash, then recovery

        after = [await app.add_task("sleepy", 0.01, f"after{i}") for i in range(20)]
        for record in [*in_flight, *after]:
            assert (await app.wait(record.id, 60)).status == "success"
        for record in done_before:  # acknowledged before the crash, still there after it
            stored = await app.get(record.id)
            assert stored is not None and stored.status == "success" and stored.returning == worker.popen.pid
        assert worker.popen.poll() is None, f"the worker died:\n{worker.output}"
        assert "postgres.listener_lost" in worker.output, "the crash was noticed"
        assert "Traceback" not in worker.output and "worker.internal_error" not in worker.output
        await app.stop()
        assert worker.stop() == 0
