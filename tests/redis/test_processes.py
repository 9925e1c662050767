"""Real worker processes on Redis: SIGKILL, lease renewal, sharing, a server restart, and
10,000 tasks with workers killed at random. Nothing here is mocked: the processes are
``python -m qtasks worker`` and the server is a real one."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from qtasks.asyncio import QueueTasks

from tests.conftest import qtasks_cli
from tests.redis.conftest import eventually
from tests.servers import redis_server

pytestmark = [pytest.mark.redis, pytest.mark.integration]

TASKS = """
import asyncio, os, time
from pathlib import Path
from qtasks.asyncio import QueueTasks

app = QueueTasks()  # QTASKS_BROKER=redis://...

def mark(tag):
    Path("runs").mkdir(exist_ok=True)
    (Path("runs") / f"{tag}.{os.getpid()}.{time.time_ns()}").touch()

@app.task
async def sleepy(seconds: float, tag: str) -> int:
    mark(tag)
    await asyncio.sleep(seconds)
    return os.getpid()

@app.task
async def quick(i: int) -> int:
    with open(f"runs/quick.{os.getpid()}", "a") as log:  # one line per execution
        log.write(f"{i}\\n")
    await asyncio.sleep(0.05)
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


def start_worker(spawn: Any, url: str, *extra: str, name: str = "worker", wait: bool = True) -> Any:
    argv = qtasks_cli("worker", "-A", "tasks_app:app", "--log-format", "json", *extra)
    proc = spawn(argv, env={"QTASKS_BROKER": url}, name=name)
    if wait:
        proc.wait_for("worker.started")
    return proc


async def test_sigkilled_worker_has_its_task_run_by_another_within_seconds(
    project: Path, spawn: Any, redis_app_url: str
) -> None:
    first = start_worker(spawn, redis_app_url, "--lease", "1", name="first")
    app = QueueTasks(broker=redis_app_url)
    record = await app.add_task("sleepy", 3, "victim")
    await eventually(lambda: runs(project, "victim"), what="the first run")
    assert runs(project, "victim")[0][0] == first.popen.pid
    second = start_worker(spawn, redis_app_url, "--lease", "1", name="second")
    first.signal(signal.SIGKILL)
    killed = time.time_ns()
    final = await app.wait(record.id, 20)
    assert final.status == "success" and final.returning == second.popen.pid
    (_, _), (pid, second_start) = runs(project, "victim")
    assert pid == second.popen.pid
    assert (second_start - killed) / 1e9 < 3.0, "redelivered within a few seconds of the kill"
    await app.stop()


async def test_a_task_longer_than_its_lease_runs_once_while_its_worker_lives(
    project: Path, spawn: Any, redis_app_url: str
) -> None:
    workers = [start_worker(spawn, redis_app_url, "--lease", "0.5", name=f"w{i}") for i in range(2)]
    app = QueueTasks(broker=redis_app_url)
    record = await app.add_task("sleepy", 2.5, "long")  # five leases long: renewed meanwhile
    final = await app.wait(record.id, 20)
    assert final.status == "success"
    assert [pid for pid, _ in runs(project, "long")] == [final.returning]
    assert final.returning in {w.popen.pid for w in workers}
    await app.stop()


async def test_worker_processes_share_the_work(project: Path, spawn: Any, redis_app_url: str) -> None:
    one = start_worker(spawn, redis_app_url, "-c", "4", name="one")
    two = start_worker(spawn, redis_app_url, "-c", "4", name="two")
    app = QueueTasks(broker=redis_app_url)
    records = [await app.add_task("sleepy", 0.05, f"share{i}") for i in range(60)]
    results = [await app.wait(r.id, 30) for r in records]
    assert all(r.status == "success" for r in results)
    assert {r.returning for r in results} == {one.popen.pid, two.popen.pid}, "both workers took part"
    assert all(len(runs(project, f"share{i}")) == 1 for i in range(60)), "every task ran exactly once"
    await app.stop()


async def test_worker_survives_a_redis_restart_and_loses_no_acknowledged_result(project: Path, spawn: Any) -> None:
    with redis_server(persistent=True) as server:
        worker = start_worker(spawn, server.url, "--lease", "2", "-c", "8", name="survivor")
        app = QueueTasks(broker=server.url)
        before = [await app.add_task("sleepy", 0.01, f"before{i}") for i in range(20)]
        done_before = [await app.wait(r.id, 20) for r in before]
        assert all(r.status == "success" for r in done_before)
        in_flight = [await app.add_task("sleepy", 1.0, f"during{i}") for i in range(8)]
        await eventually(lambda: list((project / "runs").glob("during*")), what="tasks running at the restart")

        server.restart(down_for=1.5, sig=signal.SIGKILL)  # a crash; the append-only file has every write

        after = [await app.add_task("sleepy", 0.01, f"after{i}") for i in range(20)]
        for record in [*in_flight, *after]:
            assert (await app.wait(record.id, 60)).status == "success"
        for record in done_before:  # acknowledged before the crash, still there after it
            stored = await app.get(record.id)
            assert stored is not None and stored.status == "success" and stored.returning == worker.popen.pid
        assert worker.popen.poll() is None, f"the worker died:\n{worker.output}"
        assert "broker.fetch_failed" in worker.output or "backend.retrying" in worker.output
        assert "worker.internal_error" not in worker.output
        await app.stop()
        worker.stop()


async def test_ten_thousand_tasks_with_workers_killed_at_random_all_succeed(
    project: Path, spawn: Any, redis_app_url: str
) -> None:
    total, rng = 10_000, random.Random(4)
    options = ("--lease", "1", "-c", "25")
    workers = [start_worker(spawn, redis_app_url, *options, name=f"w{i}", wait=False) for i in range(3)]
    app = QueueTasks(broker=redis_app_url)
    async with app:
        submitting = asyncio.ensure_future(asyncio.gather(*(app.add_task("quick", i) for i in range(total))))
        killed: set[int] = set()
        remaining: list[Any] = [None]
        while remaining:
            await asyncio.sleep(0.7)
            if submitting.done():
                stored = await asyncio.gather(*(app.get(r.id) for r in submitting.result()))
                remaining = [s for s in stored if s is None or not s.status.final]
            started = [w for w in workers if "worker.started" in w.output]
            if remaining and started and len(killed) < 6:
                victim = rng.choice(started)
                victim.signal(signal.SIGKILL)
                victim.popen.wait()
                killed.add(victim.popen.pid)
                workers.remove(victim)
                workers.append(start_worker(spawn, redis_app_url, *options, name="spare", wait=False))
        finals = await asyncio.gather(*(app.get(r.id) for r in submitting.result()))

    assert all(f is not None and f.status == "success" for f in finals), "every task succeeded"
    assert len(killed) >= 3, "workers were killed while tasks remained"
    executions: dict[int, list[int]] = {}
    for log in (project / "runs").glob("quick.*"):
        pid = int(log.name.split(".")[1])
        for line in log.read_text().split():
            executions.setdefault(int(line), []).append(pid)
    assert set(executions) == set(range(total)), "every task ran"
    redone = [i for i, f in enumerate(finals) if f and set(executions[i]) & killed and f.returning not in killed]
    assert redone, "tasks of killed workers were delivered again and finished by others"
