"""Real worker processes on Kafka (Tansu): a SIGKILLed worker's task runs again in another one,
a SIGTERMed worker loses nothing, two workers share the work without duplicates. Nothing here is
mocked: the processes are ``python -m qtasks worker``, the server is a real one, and the results
are kept in an SQLite file shared by the processes."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from qtasks.asyncio import QueueTasks
from qtasks_kafka.target import parse

from tests.conftest import qtasks_cli
from tests.kafka.conftest import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.integration]

TASKS = """
import asyncio, os, signal, time
from pathlib import Path
from qtasks.asyncio import QueueTasks

app = QueueTasks()  # QTASKS_BROKER=kafka://..., QTASKS_STORAGE=sqlite (./qtasks.db)

def mark(tag):
    Path("runs").mkdir(exist_ok=True)
    (Path("runs") / f"{tag}.{os.getpid()}.{time.time_ns()}").touch()

@app.task
async def sleepy(seconds: float, tag: str) -> int:
    mark(tag)
    await asyncio.sleep(seconds)
    return os.getpid()

@app.task
async def poison() -> None:
    mark("poison")
    os.kill(os.getpid(), signal.SIGKILL)  # kills every worker that runs it
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "tasks_app.py").write_text(TASKS)
    (tmp_path / "runs").mkdir()
    return tmp_path


def runs(project: Path, tag: str) -> list[tuple[int, int]]:
    """(pid, start time ns) of every execution of the task tagged ``tag``, in start order."""
    found = [p.name.split(".") for p in (project / "runs").glob(f"{tag}.*")]
    return sorted(((int(pid), int(ns)) for _, pid, ns in found), key=lambda run: run[1])


def start_worker(spawn: Any, url: str, *extra: str, name: str = "worker", **env: str) -> Any:
    argv = qtasks_cli("worker", "-A", "tasks_app:app", "--log-format", "json", *extra)
    proc = spawn(argv, env={"QTASKS_BROKER": url, "QTASKS_STORAGE": "sqlite", **env}, name=name)
    proc.wait_for("worker.started")
    return proc


async def wait_for_group(url: str, members: int, queue: str = "default", timeout: float = 60.0) -> None:
    """Until the queue's consumer group is stable with ``members`` members (a rebalance after
    that would hand partitions over while tasks run, which the tests do not want to measure)."""
    target = parse(url)
    admin = AIOKafkaAdminClient(bootstrap_servers=list(target.bootstrap))
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            (described,) = await admin.describe_consumer_groups([target.group_id(queue)])
            (group,) = described.groups
            if group[2] == "Stable" and len(group[5]) == members:
                return
            assert time.monotonic() < deadline, f"group not stable with {members} members: {group}"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def test_sigkilled_worker_has_its_task_run_by_another(project: Path, spawn: Any, kafka_app_url: str) -> None:
    workers = [start_worker(spawn, kafka_app_url, "-c", "2", name=f"w{i}") for i in range(2)]
    await wait_for_group(kafka_app_url, 2)
    app = QueueTasks(broker=kafka_app_url, storage="sqlite")
    record = await app.add_task("sleepy", 3.0, "victim")
    await eventually(lambda: runs(project, "victim"), what="the first run")
    ((pid, _),) = runs(project, "victim")
    (victim,) = [w for w in workers if w.popen.pid == pid]
    (survivor,) = [w for w in workers if w is not victim]
    victim.signal(signal.SIGKILL)  # no ack, no commit, no LeaveGroup: its partitions time out
    final = await app.wait(record.id, 60)
    assert final.status == "success" and final.returning == survivor.popen.pid
    assert [p for p, _ in runs(project, "victim")] == [victim.popen.pid, survivor.popen.pid]
    assert survivor.popen.poll() is None and "Traceback" not in survivor.output
    await app.stop()


async def test_sigterm_drains_running_tasks_and_loses_nothing(project: Path, spawn: Any, kafka_app_url: str) -> None:
    first = start_worker(spawn, kafka_app_url, "-c", "2", name="first")
    app = QueueTasks(broker=kafka_app_url, storage="sqlite")
    records = [await app.add_task("sleepy", 1.5, f"t{i}") for i in range(6)]
    await eventually(lambda: len(list((project / "runs").iterdir())) >= 2, what="two tasks running")
    first.signal(signal.SIGTERM)
    assert first.popen.wait(60) == 0, first.output
    started_by_first = [i for i in range(6) if runs(project, f"t{i}")]
    assert len(started_by_first) == 2, "a stopping worker starts nothing new"
    for i in started_by_first:  # drained: finished, not returned
        stored = await app.get(records[i].id)
        assert stored is not None and stored.status == "success" and stored.returning == first.popen.pid
    second = start_worker(spawn, kafka_app_url, "-c", "4", name="second")
    finals = [await app.wait(r.id, 60) for r in records]
    assert all(r.status == "success" for r in finals)
    assert all(len(runs(project, f"t{i}")) == 1 for i in range(6)), "every task ran exactly once"
    assert {r.returning for r in finals} == {first.popen.pid, second.popen.pid}
    assert "Traceback" not in first.output + second.output
    await app.stop()


async def test_two_workers_share_the_work_without_duplicates(project: Path, spawn: Any, kafka_app_url: str) -> None:
    workers = [start_worker(spawn, kafka_app_url, "-c", "4", name=f"w{i}") for i in range(2)]
    await wait_for_group(kafka_app_url, 2)
    app = QueueTasks(broker=kafka_app_url, storage="sqlite")
    records = [await app.add_task("sleepy", 0.05, f"share{i}") for i in range(40)]
    finals = [await app.wait(r.id, 60) for r in records]
    assert all(r.status == "success" for r in finals)
    assert {r.returning for r in finals} == {w.popen.pid for w in workers}, "both workers took part"
    assert all(len(runs(project, f"share{i}")) == 1 for i in range(40)), "every task ran exactly once"
    await app.stop()


async def test_a_task_that_kills_its_workers_is_dead_lettered_after_max_deliveries(
    project: Path, spawn: Any, kafka_app_url: str
) -> None:
    """Kafka keeps no delivery count; the hand-out records of the control log carry it from
    one owner of the partition to the next."""
    app = QueueTasks(broker=kafka_app_url, storage="sqlite")
    record = await app.add_task("poison")
    for attempt in (1, 2):
        worker = start_worker(spawn, kafka_app_url, name=f"killed{attempt}", QTASKS_MAX_DELIVERIES="2")
        assert worker.popen.wait(60) == -signal.SIGKILL
        assert len(runs(project, "poison")) == attempt
    last = start_worker(spawn, kafka_app_url, name="last", QTASKS_MAX_DELIVERIES="2")
    final = await app.wait(record.id, 60)
    assert final.status == "dead" and "delivered 3 times" in (final.reason or "")
    assert len(runs(project, "poison")) == 2, "not run a third time"
    (dead,) = await app.dead_letters()
    assert dead.queue == "default" and "max_deliveries" in dead.reason
    assert last.popen.poll() is None
    await app.stop()
