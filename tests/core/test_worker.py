"""Worker behaviour on the memory components: kinds of functions, limits, leases, bad input."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from qtasks.asyncio import QueueTasks
from qtasks.messages import Message
from qtasks.protocols import Envelope
from qtasks.testing import running_worker
from qtasks.worker import Worker


@pytest.fixture
def app() -> QueueTasks:
    return QueueTasks(broker="memory", storage="memory")


async def test_generators_collect_yields_through_the_handler(app: QueueTasks) -> None:
    @app.task(generate_handler=lambda v: v + 1)
    async def counter(n: int) -> Any:
        for i in range(n + 1, 2 * n + 1):
            yield i

    @app.task
    def sync_gen(n: int) -> Any:
        yield from (i * 10 for i in range(n))

    async def add_one(v: int) -> int:
        return v + 1

    @app.task(generate_handler=add_one)
    def sync_gen_async_handler(n: int) -> Any:
        yield from range(n)

    async with running_worker(app):
        assert (await counter.add_task(5, timeout=5)).returning == [7, 8, 9, 10, 11]
        assert (await sync_gen.add_task(3, timeout=5)).returning == [0, 10, 20]
        assert (await sync_gen_async_handler.add_task(2, timeout=5)).returning == [1, 2]


async def test_echo_task_gets_its_context(app: QueueTasks) -> None:
    app.config.extra["greeting"] = "hi"

    @app.task(echo=True)
    async def introspect(self: Any, x: int) -> dict[str, Any]:
        self.ctx.get_logger().info("inside")
        return {
            "id": self.ctx.task_id,
            "name": self.ctx.task_name,
            "attempt": self.ctx.attempt,
            "greeting": self.ctx.get_config().extra["greeting"],
            "x": x,
            "status": (await self.ctx.get_metadata()).status,
        }

    @app.task(echo=True)
    def refuse(self: Any, why: str) -> None:
        self.ctx.cancel(why)

    async with running_worker(app):
        record = await introspect.add_task(4, timeout=5)
        assert record.returning == {
            "id": record.id,
            "name": "introspect",
            "attempt": 1,
            "greeting": "hi",
            "x": 4,
            "status": "running",
        }
        cancelled = await refuse.add_task("no thanks", timeout=5)
        assert (cancelled.status, cancelled.reason, cancelled.cancel_reason) == ("cancelled", "no thanks", "no thanks")
        assert cancelled.args == ["no thanks"], "arguments stay in the record"


async def test_concurrency_limit_is_respected(app: QueueTasks) -> None:
    running, peak = 0, 0

    @app.task
    async def hold() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.1)
        running -= 1

    async with running_worker(app, concurrency=4):
        records = [await hold.add_task() for _ in range(12)]
        for record in records:
            await app.wait(record.id, 10)
    assert peak == 4


async def test_sync_task_does_not_stall_async_tasks(app: QueueTasks) -> None:
    release = threading.Event()

    @app.task
    def blocking() -> str:
        release.wait(10)
        return "blocked"

    @app.task
    async def quick() -> str:
        return "quick"

    async with running_worker(app):
        slow = await blocking.add_task()
        assert (await quick.add_task(timeout=3)).returning == "quick"
        assert (await app.get(slow.id)).status == "running"  # type: ignore[union-attr]
        release.set()
        assert (await app.wait(slow.id, 5)).returning == "blocked"


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_time_limit_ends_the_task_with_an_error(app: QueueTasks, kind: str) -> None:
    if kind == "async":

        @app.task(name="limited", max_time=0.3)
        async def limited() -> None:
            await asyncio.sleep(5)
    else:

        @app.task(name="limited", max_time=0.3)
        def limited() -> None:
            time.sleep(2)

    async with running_worker(app):
        start = time.monotonic()
        record = await app.add_task("limited", timeout=5)
        assert record.status == "error"
        assert "time limit exceeded: task 'limited' ran longer than 0.3 s" in record.traceback
        assert time.monotonic() - start < 1.5


async def test_lease_is_renewed_while_the_task_runs(app: QueueTasks) -> None:
    runs = 0

    @app.task
    async def long() -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(3.0)
        return "ok"

    async with running_worker(app, lease=1.0):
        record = await long.add_task()
        await asyncio.sleep(2.2)  # two leases later, the message must still be held
        assert await app.broker.fetch(["default"], 1, 5.0, 0.1) == []
        assert (await app.wait(record.id, 5)).returning == "ok"
    assert runs == 1


async def test_unknown_task_ends_as_an_error_record_and_dead_letter(app: QueueTasks) -> None:
    @app.task
    async def known() -> str:
        return "fine"

    await app.start()
    message = Message(name="nobody_knows_me")
    await app.storage.save(__import__("qtasks").Record.from_message(message), 60)
    await app.broker.publish(Envelope(message.id, "default", app.encode(message)))
    async with running_worker(app):
        record = await app.wait(message.id, 5)
        assert record.status == "error" and "unknown task 'nobody_knows_me'" in record.traceback
        assert (await known.add_task(timeout=5)).returning == "fine", "the worker goes on"
    (dead,) = await app.dead_letters()
    assert "unknown task 'nobody_knows_me'" in dead.reason and app.decode(dead.body).id == message.id


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x00\xffnot json", "cannot decode"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"v": 1, "id": "x", "name": "t", "args": "nope", "kwargs": {}}', "field 'args' has the wrong type"),
        (b'{"v": 1, "id": "x", "name": "t", "args": [], "kwargs": {}, "color": "red"}', "unknown field(s): 'color'"),
        (b'{"v": 99}', "unsupported message version 99"),
    ],
)
async def test_malformed_message_is_dead_lettered_and_the_worker_goes_on(
    app: QueueTasks, body: bytes, reason: str
) -> None:
    @app.task
    async def fine() -> int:
        return 1

    await app.start()
    await app.broker.publish(Envelope("raw", "default", body))
    async with running_worker(app):
        assert (await fine.add_task(timeout=5)).returning == 1
        for _ in range(50):
            if dead := await app.dead_letters():
                break
            await asyncio.sleep(0.05)
    assert dead[0].body == body and reason in dead[0].reason


async def test_wrong_arguments_are_rejected_once_not_retried(app: QueueTasks) -> None:
    calls = 0

    @app.task(retry=3)
    async def two(a: int, b: int) -> int:
        nonlocal calls
        calls += 1
        return a + b

    async with running_worker(app):
        record = await two.add_task(1, timeout=5)
    assert record.status == "error" and record.attempt == 1
    assert record.traceback == "wrong arguments: missing a required argument: 'b'"
    assert calls == 0


async def test_arguments_are_checked_per_shape_once_bound_and_still_refused_when_wrong(app: QueueTasks) -> None:
    @app.task
    async def add(a: int, b: int = 0) -> int:
        return a + b

    async with running_worker(app):
        assert (await add.add_task(1, 2, timeout=5)).returning == 3
        assert (await add.add_task(3, 4, timeout=5)).returning == 7  # the same shape: bound once
        wrong = await add.add_task(1, 2, 3, timeout=5)
        assert (await add.add_task(5, b=1, timeout=5)).returning == 6
        unknown = await add.add_task(5, c=1, timeout=5)
    assert add.spec.shapes == {(2,), (1, "b")}  # a shape that failed to bind is not kept
    assert wrong.status == "error" and wrong.traceback == "wrong arguments: too many positional arguments"
    assert unknown.status == "error" and unknown.traceback == "wrong arguments: got an unexpected keyword argument 'c'"


async def test_redelivery_of_a_finished_task_is_acked_not_rerun(app: QueueTasks) -> None:
    calls = 0

    @app.task
    async def once() -> int:
        nonlocal calls
        calls += 1
        return calls

    async with running_worker(app) as worker:
        record = await once.add_task(timeout=5)
        message = Message(name="once", id=record.id)  # as if the ack had been lost in a crash
        await app.broker.publish(Envelope(message.id, "default", app.encode(message)))
        for _ in range(100):
            if worker.counts["duplicate"]:
                break
            await asyncio.sleep(0.02)
    assert calls == 1 and worker.counts["duplicate"] == 1
    assert await app.broker.depth("default") == 0


async def test_a_message_delivered_too_often_is_dead(app: QueueTasks) -> None:
    app.config.max_deliveries = 2

    @app.task
    async def crashy() -> None: ...

    await app.start()
    record = await crashy.add_task()
    for _ in range(2):  # two workers died holding it
        (d,) = await app.broker.fetch(["default"], 1, 0.05, 1.0)
        await asyncio.sleep(0.1)
    async with running_worker(app):
        final = await app.wait(record.id, 5)
    assert final.status == "dead" and "delivered 3 times without finishing" in final.reason
    assert "max_deliveries" in (await app.dead_letters())[0].reason
    del d


async def test_graceful_stop_finishes_running_tasks(app: QueueTasks) -> None:
    @app.task
    async def work() -> str:
        await asyncio.sleep(0.5)
        return "finished"

    await app.start()  # the app outlives the worker, so the memory storage can be read after
    worker = Worker(app, grace=5)
    job = asyncio.create_task(worker.run())
    await worker.ready.wait()
    record = await work.add_task()
    await asyncio.sleep(0.2)
    worker.stop()
    await job
    assert (await app.get(record.id)).returning == "finished"  # type: ignore[union-attr]


async def test_stop_past_grace_returns_the_task_to_the_broker(app: QueueTasks) -> None:
    runs = 0

    @app.task
    async def stubborn() -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.5 if runs > 1 else 30)
        return "second time"

    await app.start()
    first = Worker(app, grace=0.2)
    job = asyncio.create_task(first.run())
    await first.ready.wait()
    record = await stubborn.add_task()
    await asyncio.sleep(0.2)
    first.stop()
    await job
    assert await app.broker.depth("default") == 1, "returned, not lost"
    async with running_worker(app):
        assert (await app.wait(record.id, 5)).returning == "second time"
    assert runs == 2


async def test_a_lone_surrogate_in_a_hand_made_message_runs_and_is_stored(app: QueueTasks) -> None:
    @app.task
    async def echo(text: str) -> str:
        return text

    await app.start()
    body = b'{"v": 1, "id": "id-\\ud800", "name": "echo", "args": ["\\udfff"], "kwargs": {}}'
    await app.broker.publish(Envelope("raw", "default", body))
    async with running_worker(app):
        record = await app.wait("id-\ud800", 5)
    assert (record.status, record.returning) == ("success", "\udfff")


async def test_a_record_that_can_never_be_stored_dead_letters_the_message() -> None:
    from qtasks.builtin.memory import MemoryStorage
    from qtasks.builtin.serializers import JsonSerializer

    class Picky(MemoryStorage):
        async def save(self, record: Any, ttl: float) -> bool:
            if record.status == "success":
                raise ValueError("storage refuses this record")
            return await super().save(record, ttl)

    app = QueueTasks(broker="memory", storage=Picky(JsonSerializer()))

    @app.task
    async def fine() -> int:
        return 1

    async with app:
        record = await fine.add_task()
        async with running_worker(app) as worker:
            for _ in range(100):
                if await app.dead_letters():
                    break
                await asyncio.sleep(0.02)
        (dead,) = await app.dead_letters()
        assert dead.reason == "record cannot be stored: ValueError: storage refuses this record"
        assert app.decode(dead.body).id == record.id
        stored = await app.get(record.id)  # and a waiter gets an end: an error saying why
        assert stored is not None and (stored.status, stored.reason) == ("error", dead.reason)
        assert await app.broker.depth("default") == 0 and worker.counts["success"] == 1


def wrapping(wrap: Any) -> Any:
    """A memory broker whose deliveries come wrapped in ``wrap``."""
    from qtasks.builtin.memory import MemoryBroker

    class Broker(MemoryBroker):
        async def fetch(self, queues: Any, limit: int, lease: float, wait: float) -> list[Any]:
            return [wrap(d) for d in await super().fetch(queues, limit, lease, wait)]

    return Broker()


async def test_a_delivery_that_acks_with_its_record_is_settled_by_that_one_step() -> None:
    """Delivery.ack_with (optional): a success or a cancelled outcome is stored through it and
    not acked again; any other outcome is stored with a save and then nacked or dead-lettered."""
    steps: list[str] = []

    class Settling:  # a memory delivery that offers ack_with, and notes each settlement
        def __init__(self, delivery: Any) -> None:
            self.inner, self.body, self.count = delivery, delivery.body, delivery.count

        async def ack_with(self, record: Any, ttl: float) -> bool:
            steps.append(f"ack_with {record.status.value}")
            written: bool = await app.storage.save(record, ttl)
            await self.inner.ack()
            return written

        async def ack(self) -> None:
            steps.append("ack")
            await self.inner.ack()

        async def dead_letter(self, reason: str) -> None:
            steps.append("dead_letter")
            await self.inner.dead_letter(reason)

        async def nack(self, delay: float = 0.0, body: bytes | None = None) -> None:
            steps.append("nack")
            await self.inner.nack(delay, body)

        async def extend(self, lease: float) -> bool:
            return bool(await self.inner.extend(lease))

    app = QueueTasks(broker=wrapping(Settling), storage="memory")

    @app.task
    async def fine() -> int:
        return 1

    @app.task
    async def broken() -> None:
        raise RuntimeError("no")

    @app.task(echo=True)
    async def gives_up(self: Any) -> None:
        self.ctx.cancel("not today")

    async def settled(count: int) -> list[str]:
        deadline = time.monotonic() + 5
        while len(steps) < count and time.monotonic() < deadline:  # settling follows the record
            await asyncio.sleep(0.01)
        return steps

    async with app, running_worker(app):
        assert (await fine.add_task(timeout=10)).returning == 1
        assert (await broken.add_task(timeout=10)).status == "error"
        assert await settled(2) == ["ack_with success", "dead_letter"]
        assert (await gives_up.add_task(timeout=10)).status == "cancelled"
        assert await settled(3) == ["ack_with success", "dead_letter", "ack_with cancelled"]
        assert await app.broker.depth("default") == 0


async def test_a_renewal_that_meets_a_run_already_acked_while_settling_is_not_a_lost_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The heartbeat renews runs older than one interval. One that is being settled may have
    been acked (ack_with) before its settlement returns: its renewal then fails, and that is no
    lost lease."""
    import logging

    release, acked = asyncio.Event(), asyncio.Event()
    late: list[bool] = []  # renewals tried after the ack, and their results

    class Slow:  # a memory delivery whose ack_with acks, then returns only when released
        def __init__(self, delivery: Any) -> None:
            self.inner, self.body, self.count = delivery, delivery.body, delivery.count
            self.ack, self.nack, self.dead_letter = delivery.ack, delivery.nack, delivery.dead_letter

        async def ack_with(self, record: Any, ttl: float) -> bool:
            written: bool = await app.storage.save(record, ttl)
            await self.inner.ack()
            acked.set()
            await release.wait()
            return written

        async def extend(self, lease: float) -> bool:
            renewed: bool = await self.inner.extend(lease)
            if acked.is_set():
                late.append(renewed)
            return renewed

    app = QueueTasks(broker=wrapping(Slow), storage="memory")

    @app.task
    async def steady() -> int:
        await asyncio.sleep(0.1)  # older than one heartbeat interval (0.05 s) when it settles
        return 1

    caplog.set_level(logging.WARNING, logger="qtasks.worker")
    async with app, running_worker(app, lease=0.2):
        record = await steady.add_task()
        await asyncio.wait_for(acked.wait(), 5)
        for _ in range(100):
            if late:
                break
            await asyncio.sleep(0.01)
        release.set()
        assert (await app.wait(record.id, 5)).returning == 1
    assert late and not any(late), "the heartbeat tried to renew the acked run, and could not"
    assert not [r for r in caplog.records if "lease.lost" in r.getMessage()]
