"""Task semantics on every embedded backend and on redis: retries, priorities, delays, cancellation,
chains, dead letters, statuses, tracebacks and retention."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import qtasks
from qtasks import Retry, Status, chain
from qtasks.asyncio import QueueTasks
from qtasks.messages import Message
from qtasks.testing import running_worker

from tests.postgres.conftest import with_prefix as postgres_prefix
from tests.redis.conftest import with_prefix


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueTasks]:
    """An app on each embedded backend, and on redis and postgres. On all but memory the worker
    starts a delivery whose record the claim saw not final while the running record is still on
    its way (Delivery.fresh)."""
    spec = {
        "memory": lambda: "memory",
        "sqlite": lambda: f"sqlite:///{tmp_path / 'semantics.db'}",
        "redis": lambda: with_prefix(request.getfixturevalue("redis_url")),
        "postgres": lambda: postgres_prefix(request.getfixturevalue("postgres_dsn")),
    }[request.param]()
    async with QueueTasks(broker=spec, storage=spec) as app:  # outlives the workers of a test
        yield app


# ----------------------------------------------------------------------------- retries


async def test_listed_exception_is_retried_with_backoff_and_the_caller_gets_the_final_record(app: QueueTasks) -> None:
    attempts: list[float] = []

    @app.task(retry=2, retry_on_exc=[KeyError], retry_backoff=0.2)
    async def flaky() -> None:
        attempts.append(time.monotonic())
        raise KeyError("missing")

    async with running_worker(app):
        record = await flaky.add_task(timeout=20)
    assert len(attempts) == 3, "one run plus two retries"
    assert (record.status, record.attempt) == ("error", 3)
    assert record.traceback.strip().endswith("KeyError: 'missing'")
    assert [h["attempt"] for h in record.history] == [1, 2]
    assert all(h["error"] == "KeyError: 'missing'" for h in record.history)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, "exponential backoff: 0.1-0.2 s, then 0.2-0.4 s"
    (dead,) = await app.dead_letters()
    assert "KeyError" in dead.reason and app.decode(dead.body).attempt == 3


async def test_a_retry_that_succeeds_ends_in_success(app: QueueTasks) -> None:
    calls = 0

    @app.task(retry=3, retry_backoff=0.01)
    async def second_time_lucky() -> str:
        nonlocal calls
        calls += 1
        if calls < 2:
            raise ConnectionError("flap")
        return "ok"

    async with running_worker(app):
        record = await second_time_lucky.add_task(timeout=10)
    assert (record.status, record.returning, record.attempt) == ("success", "ok", 2)
    assert record.history[0]["error"] == "ConnectionError: flap"
    assert await app.dead_letters() == []


async def test_an_exception_not_listed_fails_at_once(app: QueueTasks) -> None:
    calls = 0

    @app.task(retry=5, retry_on_exc=[KeyError])
    async def wrong_kind() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("not retryable")

    async with running_worker(app):
        record = await wrong_kind.add_task(timeout=10)
    assert (calls, record.status, record.attempt) == (1, "error", 1)


async def test_retry_status_is_visible_between_attempts(app: QueueTasks) -> None:
    @app.task(retry=1, retry_backoff=2.0)
    async def slow_retry() -> None:
        raise RuntimeError("again")

    async with running_worker(app):
        record = await slow_retry.add_task()
        for _ in range(100):
            current = await app.get(record.id)
            if current is not None and current.status == "retry":
                break
            await asyncio.sleep(0.02)
        assert current is not None and current.status == Status.RETRY and not current.status.final


async def test_task_can_ask_for_a_retry(app: QueueTasks) -> None:
    calls = 0

    @app.task(retry=1)
    async def polite() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Retry(after=0.05)
        return calls

    async with running_worker(app):
        assert (await polite.add_task(timeout=10)).returning == 2


async def test_a_plugin_replaces_the_retry_policy(app: QueueTasks) -> None:
    asked: list[int] = []

    class FixedDelay:
        @qtasks.hookimpl
        def qtasks_retry_delay(self, run: Any, exc: BaseException) -> float:
            asked.append(run.message.attempt)
            return 0.01 if run.message.attempt < 4 else -1.0

    app = QueueTasks(broker=app._wanted["broker"], storage=app._wanted["storage"], plugins=[FixedDelay()])

    @app.task  # no retry option at all: the plugin decides
    async def always_fails() -> None:
        raise RuntimeError("x")

    async with app, running_worker(app):
        record = await always_fails.add_task(timeout=10)
    assert (record.attempt, asked) == (4, [1, 2, 3, 4])


# ----------------------------------------------------------------------------- priorities and delays


async def test_queued_tasks_start_by_priority_then_submission_order(app: QueueTasks) -> None:
    order: list[str] = []
    gate = asyncio.Event()

    @app.task(priority=0)
    async def blocker() -> None:
        await gate.wait()

    @app.task
    async def mark(label: str) -> None:
        order.append(label)

    async with running_worker(app, concurrency=1):
        first = await blocker.add_task()
        while (await app.get(first.id)).status != "running":  # type: ignore[union-attr]
            await asyncio.sleep(0.01)
        for label, priority in [("p5", 5), ("p1-a", 1), ("p3", 3), ("p0", 0), ("p9", 9), ("p1-b", 1), ("p2", 2)]:
            await mark.add_task(label, priority=priority)
        gate.set()
        while len(order) < 7:
            await asyncio.sleep(0.01)
    assert order == ["p0", "p1-a", "p1-b", "p2", "p3", "p5", "p9"]


async def test_the_priority_given_at_submit_is_kept_in_the_record(app: QueueTasks) -> None:
    @app.task(priority=5)
    async def job() -> None: ...

    async with running_worker(app):
        assert (await job.add_task(priority=1, timeout=5)).priority == 1
        assert (await job.add_task(timeout=5)).priority == 5


async def test_delay_and_eta_run_no_earlier_than_asked(app: QueueTasks) -> None:
    started: dict[str, float] = {}

    @app.task
    async def when(label: str) -> None:
        started[label] = time.time()

    async with running_worker(app):
        submitted = time.time()
        delayed = await when.add_task("delay", delay=0.8)
        at = await app.add_task("when", "eta", eta=datetime.now(UTC) + timedelta(seconds=1.2))
        soon = await when.add_task("now", timeout=5)
        assert soon.status == "success" and "delay" not in started
        await app.wait(delayed.id, 10)
        await app.wait(at.id, 10)
    assert started["delay"] - submitted >= 0.8
    assert started["eta"] - submitted >= 1.15


# ----------------------------------------------------------------------------- cancellation


async def test_cancel_a_queued_task_it_never_starts(app: QueueTasks) -> None:
    ran: list[int] = []

    @app.task
    async def later(x: int) -> None:
        ran.append(x)

    record = await later.add_task(1, delay=0.5)
    assert await app.cancel(record.id, "changed my mind") is True
    async with running_worker(app):
        await asyncio.sleep(1.0)
        assert (await later.add_task(2, timeout=5)).status == "success"
    final = await app.get(record.id)
    assert final is not None and (final.status, final.reason, final.args) == ("cancelled", "changed my mind", [1])
    assert ran == [2]
    assert await app.broker.depth("default") == 0, "the cancelled message was acked, not left behind"


async def test_cancel_a_running_async_task_interrupts_it(app: QueueTasks) -> None:
    reached_end = False

    @app.task(retry=3)
    async def long_one(x: int) -> None:
        nonlocal reached_end
        await asyncio.sleep(30)
        reached_end = True

    async with running_worker(app, lease=2.0):
        record = await long_one.add_task(7)
        while (await app.get(record.id)).status != "running":  # type: ignore[union-attr]
            await asyncio.sleep(0.02)
        assert await app.cancel(record.id) is True
        final = await app.wait(record.id, 10)
    assert (final.status, final.reason, final.args, final.attempt) == ("cancelled", "cancelled", [7], 1)
    assert not reached_end
    assert await app.cancel(record.id) is False, "a finished task cannot be cancelled"


async def test_cancel_unknown_id_is_false(app: QueueTasks) -> None:
    assert await app.cancel("00000000-0000-0000-0000-000000000000") is False


# ----------------------------------------------------------------------------- chains


async def test_chain_passes_each_result_as_the_next_last_argument(app: QueueTasks) -> None:
    @app.task
    async def c1(x: int) -> int:
        return x + 1

    @app.task
    async def c2(factor: int, value: int) -> int:
        return factor * value

    @app.task
    async def boom(value: int) -> int:
        raise ValueError(value)

    async with running_worker(app):
        records = await chain(c1(1), c2(10)).get(timeout=10)
        assert [(r.name, r.args, r.returning) for r in records] == [("c1", [1], 2), ("c2", [10, 2], 20)]
        stopped = await chain(c1(1), boom(), c2(10)).get(timeout=10)
        assert [r.status for r in stopped] == ["success", "error"], "a failed step ends the chain"
        ids = await chain(c1(1), boom(), c2(10)).add_task()
        assert (await app.wait(ids[1], 10)).status == "error" and await app.get(ids[2]) is None


async def test_a_chain_goes_on_without_its_caller(tmp_path: Path) -> None:
    """The caller submits and leaves before any step ran: the workers drive the chain."""
    spec = f"sqlite:///{tmp_path / 'chain.db'}"

    def make() -> tuple[QueueTasks, Any, Any]:
        app = QueueTasks(broker=spec, storage=spec)

        @app.task
        async def c1(x: int) -> int:
            return x + 1

        @app.task
        async def c2(factor: int, value: int) -> int:
            return factor * value

        return app, c1, c2

    caller, c1, c2 = make()
    async with caller:
        ids = await chain(c1(1), c2(10), c2(3)).add_task()
        assert [(await caller.get(i)) is not None for i in ids] == [True, False, False]
    worker_app, *_ = make()
    async with worker_app, running_worker(worker_app):
        final = await worker_app.wait(ids[-1], 10)
    assert (final.status, final.args, final.returning) == ("success", [3, 20], 60)


def test_chain_of_blocking_handles_blocks(tmp_path: Path) -> None:
    from qtasks.testing import in_memory_worker

    app = qtasks.QueueTasks()

    @app.task
    def inc(x: int) -> int:
        return x + 1

    with in_memory_worker(app):
        records = chain(inc(1), inc(), inc()).get(timeout=10)
    assert [r.returning for r in records] == [2, 3, 4]
    app.stop()


# ----------------------------------------------------------------------------- results


async def test_traceback_starts_with_the_users_frames(app: QueueTasks) -> None:
    def helper() -> None:
        raise LookupError("deep")

    @app.task
    async def outer() -> None:
        helper()

    async with running_worker(app):
        record = await outer.add_task(timeout=5)
    lines = record.traceback.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "in outer" in lines[1] and "qtasks" not in lines[1]
    assert "site-packages" not in record.traceback and "qtasks/worker.py" not in record.traceback
    assert lines[-1] == "LookupError: deep"


async def test_a_result_the_serializer_refuses_ends_as_an_error_even_a_float(app: QueueTasks) -> None:
    """NaN and the infinities are floats JSON refuses: such a run is an error saying so, not a
    task left `running` for ever; other floats are kept as they are."""

    @app.task
    async def parse(text: str) -> float:
        return float(text)

    async with running_worker(app):
        for text in ("nan", "inf", "-inf"):
            record = await parse.add_task(text, timeout=5)
            assert record.status == "error" and "cannot be stored" in record.traceback
        assert (await parse.add_task("1.5", timeout=5)).returning == 1.5


async def test_a_task_id_holding_a_newline_runs_and_its_waiters_are_woken(app: QueueTasks) -> None:
    """A task id is the caller's to choose (``Message(id=...)``): one with a newline in it runs
    (it is not taken apart on the wire), and a waiter in another app on the same backend is woken
    when it ends, not at its timeout."""

    @app.task
    async def echo(x: int) -> int:
        return x

    message = Message(name="echo", args=[7], id=f"job\\n{time.time()}\nline two")
    async with QueueTasks(broker=app._wanted["broker"], storage=app._wanted["storage"]) as other:
        if app._wanted["broker"] == "memory":
            other = app  # memory: one process's instances share nothing
        waiting = asyncio.ensure_future(other.wait(message.id, 20))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        async with running_worker(app):
            await app.submit(message)
            mine = await app.wait(message.id, 20)
            record = await waiting
        assert (mine.returning, record.returning) == (7, 7)
        assert time.monotonic() - started < 10, "woken when it ended, not at the timeout"


async def test_records_expire_after_the_configured_retention(app: QueueTasks) -> None:
    app.config.result_ttl = 0.5

    @app.task
    async def quick() -> int:
        return 1

    async with running_worker(app):
        record = await quick.add_task(timeout=5)
        assert await app.get(record.id) is not None
        await asyncio.sleep(0.8)
        assert await app.get(record.id) is None
