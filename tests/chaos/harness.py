"""The chaos harness: the same crash drill for every backend, and a table of what happened.

Submit N tasks to three worker processes (several concurrent tasks each, some slow), SIGKILL a
random worker every few seconds and start a replacement, restart the broker's server once in the
middle (for backends that have one), stop everything gracefully, then read every task's record
from the storage. Each execution of a task is also appended to a per-process log by the task
itself, so a task that ran more than once is seen, and explained when it was running in a worker
that was killed (at-least-once means exactly that duplicate, and no other).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHAOS_APP = """
import asyncio, os, time
from qtasks.asyncio import QueueTasks

app = QueueTasks()  # configured from QTASKS_BROKER / QTASKS_STORAGE


@app.task
async def job(index: int, seconds: float) -> int:
    with open(f"runs/{os.getpid()}.log", "a") as log:
        log.write(f"{index} {time.time()}\\n")
    await asyncio.sleep(seconds)
    return index
"""


@dataclass
class Backend:
    """How to point the drill at one backend; ``restart`` restarts its server (None: none)."""

    name: str
    env: dict[str, str]
    restart: Callable[[], None] | None = None


@dataclass
class Report:
    backend: str
    tasks: int
    kills: int = 0
    restarts: int = 0
    lost: list[int] = field(default_factory=list)
    duplicates_killed: int = 0  # ran twice because the first run's worker was killed
    duplicates_restart: int = 0  # ran again because the lease lapsed while the server was down
    duplicates_unexplained: int = 0
    wall: float = 0.0
    exit_codes: list[int] = field(default_factory=list)
    worker_failures: list[str] = field(default_factory=list)  # log tails of workers that did not exit 0

    def row(self) -> str:
        return (
            f"{self.backend:<10}{self.tasks:>8}{self.kills:>7}{self.restarts:>10}{len(self.lost):>6}"
            f"{self.duplicates_killed:>11}{self.duplicates_restart:>14}{self.duplicates_unexplained:>12}"
            f"{self.wall:>9.1f}"
        )


HEADER = f"{'backend':<10}{'tasks':>8}{'kills':>7}{'restarts':>10}{'lost':>6}" + (
    f"{'dup(kill)':>11}{'dup(restart)':>14}{'dup(other)':>12}{'wall s':>9}"
)


class Workers:
    def __init__(self, workdir: Path, env: dict[str, str], count: int, concurrency: int, lease: float) -> None:
        self.workdir, self.env = workdir, {**os.environ, **env, "PYTHONPATH": str(workdir)}
        self.argv = [
            sys.executable, "-m", "qtasks", "worker", "-A", "chaos_app:app", "--concurrency", str(concurrency),
            "--lease", str(lease), "--grace", "30", "--log-format", "json", "--log-level", "info",
        ]  # fmt: skip
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.killed: set[int] = set()
        for _ in range(count):
            self.start()

    def start(self) -> None:
        log = self.workdir / f"worker-{len(self.procs)}.log"
        with log.open("wb") as out:
            self.procs.append(subprocess.Popen(self.argv, cwd=self.workdir, env=self.env, stdout=out, stderr=out))
        self.logs.append(log)

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def kill_one(self, rng: random.Random) -> None:
        victim = rng.choice(self.alive())
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.killed.add(victim.pid)
        self.start()

    def stop(self) -> tuple[list[int], list[str]]:
        """SIGTERM every worker once it is up (a replacement may still be importing); the exit
        codes of all that were not killed, and the log tail of each that did not exit 0."""
        deadline = time.monotonic() + 60
        for proc, log in zip(self.procs, self.logs, strict=True):
            while proc.poll() is None and b"worker.started" not in log.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.05)
        for proc in self.alive():
            proc.send_signal(signal.SIGTERM)
        codes, failures = [], []
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.pid not in self.killed:
                codes.append(proc.wait(60))
                if codes[-1] != 0:
                    tail = log.read_text(errors="replace").splitlines()[-15:]
                    failures.append(f"{log.name} (pid {proc.pid}) exited {codes[-1]}:\n" + "\n".join(tail))
        return codes, failures


def executions(workdir: Path) -> dict[int, list[int]]:
    """index -> pids of the workers that started it (a killed writer may leave a torn line)."""
    return {index: [pid for pid, _ in runs] for index, runs in timed_executions(workdir).items()}


def timed_executions(workdir: Path) -> dict[int, list[tuple[int, float]]]:
    """index -> (pid, start time) of every execution."""
    runs: dict[int, list[tuple[int, float]]] = {}
    for log in (workdir / "runs").glob("*.log"):
        pid = int(log.stem)
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                try:
                    runs.setdefault(int(parts[0]), []).append((pid, float(parts[1])))
                except ValueError:
                    continue
    return runs


async def drill(
    backend: Backend,
    workdir: Path,
    tasks: int,
    *,
    kill_every: float = 2.0,
    slow_share: float = 0.1,
    slow_seconds: float = 0.5,
    lease: float = 2.0,
    seed: int = 7,
) -> Report:
    """Run the drill once; the caller decides what to assert on the report."""
    from qtasks.asyncio import QueueTasks

    rng = random.Random(seed)
    outage_began = outage_ended = 0.0
    (workdir / "chaos_app.py").write_text(CHAOS_APP)
    (workdir / "runs").mkdir(exist_ok=True)
    os.environ.update(backend.env)
    report = Report(backend.name, tasks)
    started = time.monotonic()
    workers = Workers(workdir, backend.env, 3, 8, lease)
    app = QueueTasks()
    async with app:
        ids: dict[str, int] = {}
        durations = [slow_seconds if rng.random() < slow_share else 0.002 for _ in range(tasks)]

        async def submit() -> None:
            for index, seconds in enumerate(durations):
                while True:
                    try:
                        ids[(await app.add_task("job", index, seconds)).id] = index
                        break
                    except Exception:  # the broker is restarting: the client retries
                        await asyncio.sleep(0.2)

        producer = asyncio.create_task(submit())

        async def completion() -> None:
            await producer
            for task_id in list(ids):
                while not await _final(app, task_id):
                    try:
                        await app.wait(task_id, 5)
                    except Exception:  # timeouts, or the server restarting: ask again
                        await asyncio.sleep(0.2)

        done = asyncio.create_task(completion())
        while not done.done():
            await asyncio.wait([done], timeout=kill_every)
            if done.done():
                break
            workers.kill_one(rng)
            report.kills += 1
            if backend.restart is not None and not report.restarts:
                outage_began = time.time()
                await asyncio.to_thread(backend.restart)
                outage_ended = time.time()
                report.restarts += 1
        done.result()
        report.exit_codes, report.worker_failures = workers.stop()
        for task_id, index in ids.items():
            record = await app.get(task_id)
            if record is None or record.status != "success" or record.returning != index:
                report.lost.append(index)
    report.wall = time.monotonic() - started
    killed = workers.killed
    for runs in timed_executions(workdir).values():
        if len(runs) > 1:
            starts = sorted(t for _, t in runs)[1:]
            if {pid for pid, _ in runs} & killed:
                report.duplicates_killed += 1
            elif report.restarts and any(outage_began <= t <= outage_ended + 3 * lease for t in starts):
                report.duplicates_restart += 1
            else:
                report.duplicates_unexplained += 1
    missing_runs = set(range(tasks)) - set(executions(workdir))
    report.lost = sorted(set(report.lost) | missing_runs)
    return report


async def _final(app: Any, task_id: str) -> bool:
    try:
        record = await app.get(task_id)
    except Exception:
        return False
    return record is not None and record.status.final


def table(reports: list[Report]) -> str:
    return (
        "\n".join([HEADER, "-" * len(HEADER), *(r.row() for r in reports)])
        + (
            "\nlost must be 0; dup(kill): ran again because the worker running it was SIGKILLed;"
            "\ndup(restart): ran again because its lease lapsed while the server was down (at least once)"
        )
        + (
            "\nkafka: no server restart (Tansu keeps its data in memory only); dup(other) there: run again"
            " after a rebalance moved its partition (at least once)"
            if any(r.backend == "kafka" for r in reports)
            else ""
        )
    )


def counts(reports: list[Report]) -> Counter[str]:
    return Counter({r.backend: len(r.lost) for r in reports})
