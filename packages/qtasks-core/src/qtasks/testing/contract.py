"""Contract suites every broker and storage must pass.

Subclass in a test module and give the spec (a registered name or a URL)::

    class TestMyBroker(BrokerContract):
        @pytest.fixture
        def broker_spec(self, my_server_url):
            return my_server_url

The tests are plain synchronous pytest tests (each runs its own event loop), use a fresh queue
name each, and need nothing but pytest. A broker without a capability skips the tests of that
capability, saying so.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from qtasks.app import QueueTasks
from qtasks.messages import Record, Status
from qtasks.protocols import DEAD_LETTER, DELAY, LEASE, PRIORITY, Envelope


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


@asynccontextmanager
async def _component(slot: str, spec: str) -> AsyncIterator[Any]:
    app = QueueTasks(broker=spec if slot == "broker" else "memory", storage=spec if slot == "storage" else "memory")
    async with app:
        yield app.broker if slot == "broker" else app.storage


class BrokerContract:
    """Publish, fetch, ack, nack, leases, priorities, delays, dead letters, purge, depth."""

    #: False for in-process backends whose instances do not share state (``memory``): the
    #: multi-instance tests then use one instance twice.
    shared_instances = True

    @pytest.fixture
    def broker_spec(self) -> str:
        raise NotImplementedError("define the broker_spec fixture")

    def run(self, spec: str, scenario: Callable[..., Awaitable[None]], *needs: str, brokers: int = 1) -> None:
        async def main() -> None:
            async with AsyncExitStack() as stack:
                count = brokers if self.shared_instances else 1
                found = [await stack.enter_async_context(_component("broker", spec)) for _ in range(count)]
                found += found[-1:] * (brokers - count)
                if missing := [need for need in needs if need not in found[0].capabilities]:
                    pytest.skip(f"broker {spec!r} does not declare {missing[0]!r}")
                queue = f"contract-{uuid.uuid4().hex[:10]}"
                try:
                    await scenario(*found, queue)
                finally:
                    await found[0].purge(queue)

        _run(main)

    @staticmethod
    def env(queue: str, body: bytes, priority: int = 0, eta: float | None = None) -> Envelope:
        return Envelope(uuid.uuid4().hex, queue, body, priority, eta)

    @staticmethod
    async def one_by_one(broker: Any, q: str, n: int) -> list[bytes]:
        """The bodies of the next ``n`` messages, each fetched alone and acked."""
        bodies = []
        for _ in range(n):
            (d,) = await broker.fetch([q], 1, 5.0, 2.0)
            bodies.append(d.body)
            await d.ack()
        return bodies

    def test_publish_fetch_ack(self, broker_spec: str) -> None:
        async def scenario(broker: Any, q: str) -> None:
            await broker.publish(self.env(q, b"hello"))
            assert await broker.depth(q) == 1
            (d,) = await broker.fetch([q], 10, 5.0, 2.0)
            assert (d.body, d.count) == (b"hello", 1)
            await d.ack()
            assert await broker.depth(q) == 0
            assert await broker.fetch([q], 10, 5.0, 0.2) == []

        self.run(broker_spec, scenario)

    def test_fetch_respects_limit_and_queues(self, broker_spec: str) -> None:
        async def scenario(broker: Any, q: str) -> None:
            for i in range(5):
                await broker.publish(self.env(q, b"%d" % i))
            await broker.publish(self.env(q + "-other", b"elsewhere"))
            first = await broker.fetch([q], 3, 5.0, 2.0)
            rest = await broker.fetch([q], 10, 5.0, 2.0)
            assert len(first) == 3 and len(rest) == 2
            assert sorted(d.body for d in first + rest) == [b"0", b"1", b"2", b"3", b"4"]
            for d in first + rest:
                await d.ack()
            (other,) = await broker.fetch([q + "-other"], 10, 5.0, 2.0)
            assert other.body == b"elsewhere"
            await other.ack()

        self.run(broker_spec, scenario)

    def test_priority_then_publish_order(self, broker_spec: str) -> None:
        async def scenario(broker: Any, q: str) -> None:
            for body, priority in [(b"p5", 5), (b"p1a", 1), (b"p3", 3), (b"p0", 0), (b"p1b", 1)]:
                await broker.publish(self.env(q, body, priority))
            assert await self.one_by_one(broker, q, 5) == [b"p0", b"p1a", b"p1b", b"p3", b"p5"]

        self.run(broker_spec, scenario, PRIORITY)

    def test_eta_is_not_delivered_early(self, broker_spec: str) -> None:
        async def scenario(broker: Any, q: str) -> None:
            start = time.time()
            await broker.publish(self.env(q, b"later", eta=start + 1.0))
            assert await broker.fetch([q], 1, 5.0, 0.3) == []
            (d,) = await broker.fetch([q], 1, 5.0, 5.0)
            assert time.time() - start >= 0.95
            await d.ack()

        self.run(broker_spec, scenario, DELAY)

    def test_a_message_that_waited_keeps_its_priority(self, broker_spec: str) -> None:
        async def scenario(broker: Any, q: str) -> None:
            await broker.publish(self.env(q, b"nacked", -2))
            (d,) = await broker.fetch([q], 1, 5.0, 2.0)
            await d.nack(0.5)
            await broker.publish(self.env(q, b"delayed", -1, eta=time.time() + 0.5))
            await broker.publish(self.env(q, b"p0"))
            await asyncio.sleep(0.7)
            assert await self.one_by_one(broker, q, 3) == [b"nacked", b"delayed", b"p0"]

        self.run(broker_spec, scenario, PRIORITY, DELAY)

    def test_waiting_fetch_wakes_on_publish(self, broker_spec: str) -> None:
        async def scenario(broker: Any, q: str) -> None:
            waiting = asyncio.ensure_future(broker.fetch([q], 1, 5.0, 10.0))
            await asyncio.sleep(0.2)
            sent = time.monotonic()
            await broker.publish(self.env(q, b"now"))
            (d,) = await waiting
            assert time.monotonic() - sent < 2.0, "a waiting fetch must be woken, not wait out its timeout"
            await d.ack()

        self.run(broker_spec, scenario)

    def test_cancelled_fetch_loses_nothing(self, broker_spec: str) -> None:
        async def scenario(broker: Any, q: str) -> None:
            waiting = asyncio.ensure_future(broker.fetch([q], 1, 30.0, 10.0))
            await asyncio.sleep(0.1)
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            await broker.publish(self.env(q, b"kept"))
            (d,) = await broker.fetch([q], 1, 30.0, 5.0)
            assert d.body == b"kept"
            await d.ack()

        self.run(broker_spec, scenario)

    def test_nack_with_delay_and_new_body(self, broker_spec: str) -> None:
        async def scenario(broker: Any, q: str) -> None:
            await broker.publish(self.env(q, b"v1"))
            (d,) = await broker.fetch([q], 1, 5.0, 2.0)
            await d.nack(0.8, b"v2")
            assert await broker.fetch([q], 1, 5.0, 0.2) == []
            (again,) = await broker.fetch([q], 1, 5.0, 5.0)
            assert (again.body, again.count) == (b"v2", 2)
            await again.ack()
            assert await broker.depth(q) == 0

        self.run(broker_spec, scenario, DELAY)

    def test_lapsed_lease_redelivers_and_fences_the_old_holder(self, broker_spec: str) -> None:
        async def scenario(broker: Any, q: str) -> None:
            await broker.publish(self.env(q, b"job"))
            (old,) = await broker.fetch([q], 1, 0.5, 2.0)
            assert await broker.fetch([q], 1, 0.5, 0.2) == []  # leased: invisible
            (new,) = await broker.fetch([q], 1, 5.0, 5.0)
            assert (new.body, new.count) == (b"job", 2)
            assert await old.extend(5.0) is False
            await old.ack()  # must not remove the message leased to `new`
            assert await broker.depth(q) == 1
            await new.ack()
            assert await broker.depth(q) == 0

        self.run(broker_spec, scenario, LEASE)

    def test_extend_keeps_the_lease(self, broker_spec: str) -> None:
        async def scenario(broker: Any, q: str) -> None:
            await broker.publish(self.env(q, b"long"))
            (d,) = await broker.fetch([q], 1, 0.6, 2.0)
            for _ in range(4):
                await asyncio.sleep(0.3)
                assert await d.extend(0.6) is True
            assert await broker.fetch([q], 1, 0.6, 0.1) == []
            await d.ack()

        self.run(broker_spec, scenario, LEASE)

    def test_two_consumers_share_without_duplicates(self, broker_spec: str) -> None:
        async def scenario(one: Any, two: Any, q: str) -> None:
            for i in range(40):
                await one.publish(self.env(q, b"%d" % i))
            seen: list[bytes] = []
            deadline = time.monotonic() + 30

            async def consume(broker: Any) -> None:  # as workers do: an empty fetch is not the end
                while len(seen) < 40 and time.monotonic() < deadline:
                    for d in await broker.fetch([q], 3, 10.0, 0.5):
                        seen.append(d.body)
                        await d.ack()

            await asyncio.gather(consume(one), consume(two))
            assert sorted(seen) == sorted(b"%d" % i for i in range(40))

        self.run(broker_spec, scenario, brokers=2)

    def test_dead_letter_keeps_body_and_reason(self, broker_spec: str) -> None:
        async def scenario(broker: Any, q: str) -> None:
            await broker.publish(self.env(q, b"poison"))
            (d,) = await broker.fetch([q], 1, 5.0, 2.0)
            await d.dead_letter("boom: it exploded")
            assert await broker.depth(q) == 0
            (dead,) = [x for x in await broker.dead_letters(1000) if x.queue == q]
            assert (dead.body, dead.reason) == (b"poison", "boom: it exploded")
            assert await broker.purge_dead([dead.id]) == 1
            assert [x for x in await broker.dead_letters(1000) if x.queue == q] == []

        self.run(broker_spec, scenario, DEAD_LETTER)

    def test_purge_and_depth(self, broker_spec: str) -> None:
        async def scenario(broker: Any, q: str) -> None:
            for _ in range(3):
                await broker.publish(self.env(q, b"x"))
            assert await broker.depth(q) == 3
            assert await broker.purge(q) == 3
            assert await broker.depth(q) == 0

        self.run(broker_spec, scenario)


class StorageContract:
    """Save rules (insert-only ``new``, sticky final), get, wait (woken, not polled), TTL."""

    #: As :attr:`BrokerContract.shared_instances`.
    shared_instances = True

    @pytest.fixture
    def storage_spec(self) -> str:
        raise NotImplementedError("define the storage_spec fixture")

    def run(self, spec: str, scenario: Callable[..., Awaitable[None]], storages: int = 1) -> None:
        async def main() -> None:
            async with AsyncExitStack() as stack:
                count = storages if self.shared_instances else 1
                found = [await stack.enter_async_context(_component("storage", spec)) for _ in range(count)]
                found += found[-1:] * (storages - count)
                await scenario(*found)

        _run(main)

    @staticmethod
    def record(status: Status = Status.NEW, **changes: Any) -> Record:
        return Record(
            id=str(uuid.uuid4()), name="contract", status=status, args=[1, "two"], kwargs={"k": [3]}, **changes
        )

    def test_save_and_get_round_trip(self, storage_spec: str) -> None:
        async def scenario(storage: Any) -> None:
            rec = self.record(Status.SUCCESS, returning={"a": [1, 2]}, attempt=2, history=[{"attempt": 1}])
            assert await storage.save(rec, 60) is True
            got = await storage.get(rec.id)
            assert got is not None and got.to_dict() == rec.to_dict()
            assert await storage.get(str(uuid.uuid4())) is None

        self.run(storage_spec, scenario)

    def test_new_is_insert_only_and_final_is_sticky(self, storage_spec: str) -> None:
        async def scenario(storage: Any) -> None:
            rec = self.record()
            assert await storage.save(rec, 60) is True
            assert await storage.save(rec, 60) is False
            rec.status = Status.RUNNING
            assert await storage.save(rec, 60) is True
            rec.status = Status.NEW
            assert await storage.save(rec, 60) is False
            rec.status, rec.returning = Status.SUCCESS, 42
            assert await storage.save(rec, 60) is True
            rec.status, rec.returning = Status.RUNNING, None
            assert await storage.save(rec, 60) is False
            got = await storage.get(rec.id)
            assert got is not None and (got.status, got.returning) == (Status.SUCCESS, 42)

        self.run(storage_spec, scenario)

    def test_wait_is_woken_by_save(self, storage_spec: str) -> None:
        async def scenario(waiter: Any, writer: Any) -> None:
            rec = self.record(Status.RUNNING)
            await writer.save(rec, 60)
            waiting = asyncio.ensure_future(waiter.wait(rec.id, 10.0))
            await asyncio.sleep(0.3)
            assert not waiting.done(), "wait must not return a record that is not final"
            saved = time.monotonic()
            rec.status, rec.returning = Status.ERROR, None
            await writer.save(rec, 60)
            got = await waiting
            assert got is not None and got.status == Status.ERROR
            assert time.monotonic() - saved < 1.0, "wait must be woken by the save, not poll slowly"

        self.run(storage_spec, scenario, storages=2)

    def test_wait_times_out_with_none(self, storage_spec: str) -> None:
        async def scenario(storage: Any) -> None:
            rec = self.record(Status.RUNNING)
            await storage.save(rec, 60)
            start = time.monotonic()
            assert await storage.wait(rec.id, 0.5) is None
            assert 0.45 <= time.monotonic() - start < 3.0

        self.run(storage_spec, scenario)

    def test_records_expire(self, storage_spec: str) -> None:
        async def scenario(storage: Any) -> None:
            rec = self.record(Status.SUCCESS)
            await storage.save(rec, 0.5)
            assert await storage.get(rec.id) is not None
            await asyncio.sleep(1.2)
            assert await storage.get(rec.id) is None
            rec.status = Status.NEW  # an expired record no longer blocks writes, not even `new`
            assert await storage.save(rec, 60) is True

        self.run(storage_spec, scenario)

    def test_delete(self, storage_spec: str) -> None:
        async def scenario(storage: Any) -> None:
            rec = self.record(Status.SUCCESS)
            await storage.save(rec, 60)
            assert await storage.delete(rec.id) is True
            assert await storage.get(rec.id) is None
            assert await storage.delete(rec.id) is False

        self.run(storage_spec, scenario)
