"""Real worker processes on every backend: a SIGKILLed worker's task runs again in another one,
a lease is renewed while its task runs, two workers share the work without duplicates, a
SIGTERMed worker drains and loses nothing, a worker survives its server's crash. Nothing here is
mocked: the processes are ``python -m qtasks worker`` and the servers are real ones (see
``tests/servers.py``). What only one backend has stays in its own directory."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.backends.kit import Backend, eventually, on, runs, start_worker
from tests.servers import postgres_server, redis_server

pytestmark = pytest.mark.integration


@on("sqlite", "redis", "postgres", "kafka")
async def test_sigkilled_worker_has_its_task_run_by_another(project: Path, spawn: Any, backend: Backend) -> None:
    workers = [start_worker(spawn, backend, *backend.kill_options, name=f"w{i}") for i in range(2)]
    await backend.settle(2)
    app = backend.app()
    record = await app.add_task("sleepy", 3.0, "victim")
    await eventually(lambda: runs(project, "victim"), backend.patience, what="the first run")
    ((pid, _),) = runs(project, "victim")
    (victim,) = [w for w in workers if w.popen.pid == pid]
    (survivor,) = [w for w in workers if w is not victim]
    victim.signal(signal.SIGKILL)  # no ack, no release: its lease (Kafka: its partitions) times out
    killed = time.time_ns()
    final = await app.wait(record.id, backend.wait)
    assert final.status == "success" and final.returning == survivor.popen.pid
    (first, _), (second, second_start) = runs(project, "victim")
    assert [first, second] == [victim.popen.pid, survivor.popen.pid]
    if backend.redelivered_within is not None:
        took = (second_start - killed) / 1e9
        assert took < backend.redelivered_within, f"redelivered {took:.1f}s after the kill, not within a few seconds"
    assert survivor.popen.poll() is None and "Traceback" not in survivor.output
    await app.stop()


@on("redis", "postgres")
async def test_a_task_longer_than_its_lease_runs_once_while_the_workers_share_the_rest(
    project: Path, spawn: Any, backend: Backend
) -> None:
    workers = [start_worker(spawn, backend, "--lease", "0.5", "-c", "4", name=f"w{i}") for i in range(2)]
    app = backend.app()
    long = await app.add_task("sleepy", 2.5, "long")  # five leases long: renewed meanwhile
    short = [await app.add_task("sleepy", 0.05, f"share{i}") for i in range(40)]
    results = [await app.wait(r.id, backend.wait) for r in short]
    final = await app.wait(long.id, backend.wait)
    assert final.status == "success"
    assert [pid for pid, _ in runs(project, "long")] == [final.returning], "ran once, by one worker"
    assert final.returning in {w.popen.pid for w in workers}
    assert all(r.status == "success" for r in results)
    assert {r.returning for r in results} == {w.popen.pid for w in workers}, "both workers took part"
    assert all(len(runs(project, f"share{i}")) == 1 for i in range(40)), "every task ran exactly once"
    await app.stop()


@on("sqlite", "redis", "postgres", "kafka")
async def test_two_workers_share_the_work_without_duplicates(project: Path, spawn: Any, backend: Backend) -> None:
    workers = [start_worker(spawn, backend, "-c", "4", name=f"w{i}") for i in range(2)]
    await backend.settle(2)
    app = backend.app()
    records = [await app.add_task("sleepy", 0.05, f"share{i}") for i in range(60)]
    finals = [await app.wait(r.id, backend.wait) for r in records]
    assert all(r.status == "success" for r in finals)
    assert {r.returning for r in finals} == {w.popen.pid for w in workers}, "both workers took part"
    assert all(len(runs(project, f"share{i}")) == 1 for i in range(60)), "every task ran exactly once"
    await app.stop()


@on("sqlite", "redis", "postgres", "kafka")
async def test_sigterm_drains_running_tasks_and_loses_nothing(project: Path, spawn: Any, backend: Backend) -> None:
    first = start_worker(spawn, backend, "-c", "2", name="first")
    app = backend.app()
    records = [await app.add_task("sleepy", 1.5, f"t{i}") for i in range(6)]
    await eventually(lambda: len(list((project / "runs").iterdir())) >= 2, backend.patience, "two tasks running")
    first.signal(signal.SIGTERM)
    assert first.popen.wait(backend.wait) == 0, first.output
    started_by_first = [i for i in range(6) if runs(project, f"t{i}")]
    assert len(started_by_first) == 2, "a stopping worker starts nothing new"
    for i in started_by_first:  # drained: finished, not returned
        stored = await app.get(records[i].id)
        assert stored is not None and stored.status == "success" and stored.returning == first.popen.pid
    second = start_worker(spawn, backend, "-c", "4", name="second")
    finals = [await app.wait(r.id, backend.wait) for r in records]
    assert all(r.status == "success" for r in finals)
    assert all(len(runs(project, f"t{i}")) == 1 for i in range(6)), "every task ran exactly once"
    assert {r.returning for r in finals} == {first.popen.pid, second.popen.pid}
    assert "Traceback" not in first.output + second.output
    await app.stop()


@dataclass(frozen=True)
class Crash:
    """A server of one's own and how it crashes: its append-only file (Redis, fsync'd on every
    write) or synchronous commit (PostgreSQL) keeps what was acknowledged."""

    server: Callable[[], AbstractContextManager[Any]]
    sig: int
    down_for: float
    noticed: tuple[str, ...]  #: the worker logs one of these


CRASHES = [
    pytest.param(
        Crash(lambda: redis_server(persistent=True), signal.SIGKILL, 1.5, ("broker.fetch_failed", "backend.retrying")),
        marks=pytest.mark.redis,
        id="redis",
    ),
    # SIGQUIT: an immediate shutdown, a crash, then recovery at the next start
    pytest.param(Crash(postgres_server, signal.SIGQUIT, 1.0, ("postgres.listener_lost",)), id="postgres"),
]


@pytest.mark.parametrize("crash", CRASHES)
async def test_worker_survives_a_server_crash_and_loses_no_acknowledged_result(
    project: Path, spawn: Any, crash: Crash
) -> None:
    with crash.server() as server:
        crashed = Backend("crashed", server.url)
        worker = start_worker(spawn, crashed, "--lease", "2", "-c", "8", name="survivor")
        app = crashed.app()
        before = [await app.add_task("sleepy", 0.01, f"before{i}") for i in range(20)]
        done_before = [await app.wait(r.id, 20) for r in before]
        assert all(r.status == "success" for r in done_before)
        in_flight = [await app.add_task("sleepy", 1.0, f"during{i}") for i in range(8)]
        await eventually(lambda: list((project / "runs").glob("during*")), 20, what="tasks running at the crash")

        server.restart(down_for=crash.down_for, sig=crash.sig)

        after = [await app.add_task("sleepy", 0.01, f"after{i}") for i in range(20)]
        for record in [*in_flight, *after]:
            assert (await app.wait(record.id, 60)).status == "success"
        for record in done_before:  # acknowledged before the crash, still there after it
            stored = await app.get(record.id)
            assert stored is not None and stored.status == "success" and stored.returning == worker.popen.pid
        assert worker.popen.poll() is None, f"the worker died:\n{worker.output}"
        assert any(word in worker.output for word in crash.noticed), "the crash was noticed"
        assert "Traceback" not in worker.output and "worker.internal_error" not in worker.output
        await app.stop()
        assert worker.stop() == 0
