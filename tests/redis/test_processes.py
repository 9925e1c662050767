"""Real worker processes on Redis: 10,000 tasks with workers killed at random. Nothing here is
mocked: the processes are ``python -m qtasks worker`` and the server is a real one. What every
backend does (SIGKILL, lease renewal, sharing, SIGTERM, a server crash) is tested on this one too,
in tests/backends/test_processes.py."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.backends.kit import Backend, make_project, start_worker

pytestmark = [pytest.mark.redis, pytest.mark.integration]


async def test_ten_thousand_tasks_with_workers_killed_at_random_all_succeed(
    tmp_path: Path, spawn: Any, redis_app_url: str
) -> None:
    project, backend = make_project(tmp_path), Backend("redis", redis_app_url)
    total, rng = 10_000, random.Random(4)
    options = ("--lease", "1", "-c", "25")
    workers = [start_worker(spawn, backend, *options, name=f"w{i}", wait=False) for i in range(3)]
    app = backend.app()
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
                workers.append(start_worker(spawn, backend, *options, name="spare", wait=False))
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
