"""Periodic tasks: cron parsing, slots, and exactly one run per slot however many schedulers."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from qtasks.asyncio import QueueTasks
from qtasks.schedule import Cron, Schedule, Scheduler
from qtasks.testing import running_worker

from tests.conftest import qtasks_cli


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/15 * * * *", "2026-03-01T10:07:30", "2026-03-01T10:15:00"),
        ("0 9 * * mon-fri", "2026-11-27T10:00:00", "2026-11-30T09:00:00"),  # Friday after 9 -> Monday
        ("30 2 1 jan *", "2026-06-01T00:00:00", "2027-01-01T02:30:00"),
        ("0 0 13 * fri", "2026-11-10T00:00:00", "2026-11-13T00:00:00"),  # 13th OR a Friday
        ("5,10 1-2 * * 0", "2026-11-28T00:00:00", "2026-11-29T01:05:00"),  # Sunday as 0
        ("0 12 * * 7", "2026-11-28T00:00:00", "2026-11-29T12:00:00"),  # ... and as 7
        ("59 23 31 dec *", "2026-12-31T23:59:00", "2027-12-31T23:59:00"),  # strictly after
    ],
)
def test_cron_next_slot(expression: str, after: str, expected: str) -> None:
    assert Cron(expression).next_after(at(after)) == at(expected)


@pytest.mark.parametrize("bad", ["* * * *", "60 * * * *", "* 24 * * *", "*/0 * * * *", "0 0 30 feb *"])
def test_bad_cron_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        Cron(bad).next_after(at("2026-01-01T00:00:00"))
    app = QueueTasks(broker="memory", storage="memory")
    with pytest.raises(ValueError, match="cron"):  # when declared, not at a tick of the scheduler
        app.schedule("anything", cron=bad)


def test_every_slots_are_aligned_and_run_ids_are_shared_by_all_schedulers() -> None:
    every = Schedule("report", every=timedelta(seconds=10))
    assert every.next_after(1_000_003.2) == 1_000_010.0
    assert every.run_id(1_000_010.0) == Schedule("report", every=timedelta(seconds=10)).run_id(1_000_010.0)
    assert every.run_id(1_000_010.0) != every.run_id(1_000_020.0)
    with pytest.raises(ValueError, match="exactly one of every= or cron="):
        Schedule("report")
    fast, slot = Schedule("tick", every=timedelta(seconds=0.2)), 1_795_828_420.0
    for _ in range(2000):  # float division must never hand back the same slot
        following = fast.next_after(slot)
        assert 0.19 < following - slot < 0.21
        slot = following


async def test_concurrent_schedulers_fire_each_slot_once(sqlite_url: str) -> None:
    apps = [QueueTasks(broker=sqlite_url) for _ in range(5)]
    schedule = Schedule("report", every=timedelta(seconds=60), args=(1,))
    for app in apps:
        await app.start()
    try:
        slot = schedule.next_after(time.time())
        won = await asyncio.gather(*(Scheduler(app, [schedule]).fire(schedule, slot) for app in apps))
        assert sorted(won) == [False, False, False, False, True]
        assert await apps[0].broker.depth("default") == 1
        record = await apps[0].get(schedule.run_id(slot))
        assert record is not None and (record.name, record.args) == ("report", [1])
    finally:
        for app in apps:
            await app.stop()


def test_a_shared_task_schedule_is_on_every_app_whenever_it_was_made() -> None:
    from qtasks import shared_task
    from qtasks.tasks import shared_tasks_router

    before = QueueTasks(broker="memory", storage="memory")

    @shared_task(name="shared_tick_for_test", every=timedelta(minutes=5))
    async def tick() -> None: ...

    try:
        after = QueueTasks(broker="memory", storage="memory")
        for app in (before, after):
            assert [s.name for s in app.schedules] == ["shared_tick_for_test@0:05:00"]
    finally:
        shared_tasks_router().tasks.pop("shared_tick_for_test")


def test_an_app_task_or_router_may_take_the_name_of_a_shared_task_made_before_the_app() -> None:
    """The app's own task of that name is the one its workers run, as lookup() prefers it."""
    from qtasks import shared_task
    from qtasks.asyncio import AsyncRouter
    from qtasks.tasks import shared_tasks_router

    @shared_task(name="shared_send_for_test")
    async def library_send() -> str:
        return "library"

    try:
        app = QueueTasks(broker="memory", storage="memory")

        @app.task(name="shared_send_for_test")
        async def own_send() -> str:
            return "app"

        assert app.lookup("shared_send_for_test").func is own_send.func  # type: ignore[union-attr]
        other, router = QueueTasks(broker="memory", storage="memory"), AsyncRouter()

        @router.task(name="shared_send_for_test")
        async def routed_send() -> str:
            return "router"

        other.include_router(router)
        assert other.lookup("shared_send_for_test").func is routed_send.func  # type: ignore[union-attr]
    finally:
        shared_tasks_router().tasks.pop("shared_send_for_test")


async def test_decorator_and_app_schedules_run_as_ordinary_tasks() -> None:
    app = QueueTasks(broker="memory", storage="memory")
    runs: list[str] = []

    @app.task(every=timedelta(seconds=0.2))
    async def tick() -> None:
        runs.append("tick")

    @app.task
    async def report(kind: str) -> None:
        runs.append(kind)

    app.schedule(report, "daily", every=timedelta(seconds=0.3), name="report-daily")
    assert [s.name for s in app.schedules] == ["tick@0:00:00.200000", "report-daily"]
    scheduler = Scheduler(app)
    async with app, running_worker(app):
        job = asyncio.create_task(scheduler.run())
        await asyncio.sleep(1.0)
        scheduler.stop()
        await job
    assert 3 <= runs.count("tick") <= 6 and 2 <= runs.count("daily") <= 4
    assert scheduler.fired == len(runs)


SCHEDULED_APP = """
import os, time
from datetime import timedelta
from pathlib import Path
from qtasks.asyncio import QueueTasks

app = QueueTasks()

@app.task(every=timedelta(seconds=1))
async def heartbeat(self=None) -> float:
    return time.time()
"""


def test_three_scheduler_processes_and_a_beat_worker_fire_each_slot_once(tmp_path: Path, spawn: Any) -> None:
    (tmp_path / "sched_app.py").write_text(SCHEDULED_APP)
    worker = spawn(qtasks_cli("worker", "-A", "sched_app:app", "--beat", "--log-format", "json"), name="worker")
    schedulers = [
        spawn(qtasks_cli("scheduler", "-A", "sched_app:app", "--log-format", "json"), name=f"s{i}") for i in range(3)
    ]
    worker.wait_for("worker.started")
    for s in schedulers:
        s.wait_for("scheduler.started")
    time.sleep(4.5)
    for proc in [*schedulers, worker]:
        assert proc.stop() == 0
    fired = [
        json.loads(line)
        for proc in [*schedulers, worker]
        for line in proc.output.splitlines()
        if '"scheduler.fired"' in line
    ]
    slots = Counter(event["slot"] for event in fired)
    assert len(slots) >= 3, "about one slot per second"
    assert set(slots.values()) == {1}, f"each slot fired by exactly one of four schedulers: {slots}"
    assert len({event["task_id"] for event in fired}) == len(fired), "each run is its own task"

    async def results() -> list[str]:
        app = QueueTasks()
        async with app:
            return [(await app.wait(event["task_id"], 10)).status for event in fired]

    assert set(asyncio.run(results())) == {"success"}
