"""The kafka broker in one process, against the real server: wiring, bad input, the app path,
commits, held delays, purges and dead letters seen from other instances. Worker processes are
in test_processes.py; what every backend does alike (connection errors, masked passwords) is in
tests/backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from qtasks.asyncio import QueueTasks
from qtasks.errors import CapabilityError
from qtasks.messages import Message
from qtasks.protocols import Envelope
from qtasks.testing import running_worker
from qtasks_kafka import KafkaBroker
from qtasks_kafka.target import parse

from tests.kafka.conftest import eventually, with_params, with_prefix

pytestmark = pytest.mark.kafka


@asynccontextmanager
async def raw_producer(url: str) -> AsyncIterator[Any]:
    """A plain aiokafka producer on the test's server, to push records straight onto a topic."""
    producer = AIOKafkaProducer(bootstrap_servers=list(parse(url).bootstrap), acks="all")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def committed(url: str, queue: str) -> int:
    """The committed offset of partition 0 of ``queue``'s topic (-1 for none), read from the server."""
    target = parse(url)
    admin = AIOKafkaAdminClient(bootstrap_servers=list(target.bootstrap))
    await admin.start()
    try:
        tp = TopicPartition(target.topic(queue), 0)
        return int((await admin.list_consumer_group_offsets(target.group_id(queue), partitions=[tp]))[tp].offset)
    finally:
        await admin.close()


async def eventually_started(broker: KafkaBroker, queue: str) -> Any:
    """The queue's consumer, once a fetch has started it."""
    await eventually(lambda: queue in broker._consumers and broker._consumers[queue].done(), what="consumer started")
    return broker._consumers[queue].result()


async def test_a_kafka_url_selects_the_broker(kafka_app_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QTASKS_BROKER", kafka_app_url)
    monkeypatch.setenv("QTASKS_STORAGE", "sqlite")
    app = QueueTasks()
    async with app:
        assert isinstance(app.broker, KafkaBroker)
        assert type(app.storage).__name__ == "SqliteStorage"
        assert app.plugins.origins["kafka"].startswith("qtasks-kafka")


async def test_without_a_storage_the_default_is_sqlite(kafka_app_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QTASKS_BROKER", kafka_app_url)
    app = QueueTasks()
    async with app:
        assert type(app.storage).__name__ == "SqliteStorage"  # Kafka has no storage: the default


async def test_submit_run_retry_and_schedule_through_a_worker(kafka_app_url: str, sqlite_url: str) -> None:
    app = QueueTasks(broker=kafka_app_url, storage=sqlite_url)
    attempts: list[int] = []

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    @app.task(retry=2, retry_backoff=0.2)
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first time")
        return "second time"

    async with app, running_worker(app, concurrency=4):
        assert (await app.add_task("double", 21, timeout=30)).returning == 42
        results = await asyncio.gather(*(app.add_task("double", i, timeout=30) for i in range(20)))
        assert [r.returning for r in results] == [2 * i for i in range(20)]
        retried = await app.add_task("flaky", timeout=30)  # the retry is a nack with a delay
        assert (retried.status, retried.returning, retried.attempt) == ("success", "second time", 2)
        sent = time.time()
        later = await app.add_task("double", 5, delay=1.0, timeout=30)
        assert later.returning == 10 and later.started_at is not None and later.started_at >= sent + 0.95
        assert await app.broker.depth("default") == 0


async def test_priorities_are_refused_at_submit(kafka_app_url: str) -> None:
    app = QueueTasks(broker=kafka_app_url, storage="memory")
    async with app:
        with pytest.raises(CapabilityError):
            await app.add_task("anything", priority=3)


async def test_malformed_records_are_dead_lettered_with_the_reason_and_the_worker_goes_on(kafka_app_url: str) -> None:
    app = QueueTasks(broker=kafka_app_url, storage="memory")
    ran: list[int] = []

    @app.task
    async def note(x: int) -> int:
        ran.append(x)
        return x

    good = Message(name="note", args=[7])
    topic = parse(kafka_app_url).topic("default")
    async with app, running_worker(app), raw_producer(kafka_app_url) as producer:
        assert (await app.add_task("note", 6, timeout=30)).returning == 6
        await producer.send_and_wait(topic, b"\x00 this is not a message")  # no key, no headers
        await producer.send_and_wait(topic, app.encode(good), headers=[("qtasks-eta", b"not a number")])
        assert (await app.wait(good.id, 30)).returning == 7
        deadline = time.monotonic() + 30
        while not (dead := await app.dead_letters()):
            assert time.monotonic() < deadline, "the bad record was not dead-lettered"
            await asyncio.sleep(0.1)
        assert [d.body for d in dead] == [b"\x00 this is not a message"]
        assert dead[0].reason.startswith("malformed message: cannot decode") and dead[0].queue == "default"
        assert (await app.add_task("note", 8, timeout=30)).returning == 8  # the worker went on
    assert ran == [6, 7, 8]


async def test_out_of_order_acks_commit_only_the_settled_prefix(kafka_url: str) -> None:
    url = with_params(with_prefix(kafka_url), partitions="1")
    app = QueueTasks(broker=url, storage="memory")
    async with app:
        for i in range(3):
            await app.broker.publish(Envelope(f"m{i}", "q", b"%d" % i))
        first, second, third = await app.broker.fetch(["q"], 3, 30.0, 10.0)
        assert [first.body, second.body, third.body] == [b"0", b"1", b"2"]
        await third.ack()
        await second.ack()
        assert await committed(url, "q") in (-1, 0), "nothing before the first unsettled record"
        assert await app.broker.depth("q") == 1  # the first: the two acked behind it are settled
        await first.ack()
        assert await committed(url, "q") == 3
        assert await app.broker.depth("q") == 0


async def test_a_long_delay_is_requeued_and_does_not_hold_back_commits(kafka_url: str) -> None:
    url = with_params(with_prefix(kafka_url), partitions="1", hold_ms="300")
    app = QueueTasks(broker=url, storage="memory")
    async with app:
        sent = time.time()
        await app.broker.publish(Envelope("late", "q", b"late", eta=sent + 2.5))
        await app.broker.publish(Envelope("now", "q", b"now"))
        (now,) = await app.broker.fetch(["q"], 5, 30.0, 10.0)
        assert now.body == b"now"
        await now.ack()
        # after hold_ms the early record is written again at the tail and its offset committed
        deadline = time.monotonic() + 20
        while await committed(url, "q") < 2:
            assert time.monotonic() < deadline, "the held record still blocks the commit"
            await asyncio.sleep(0.1)
        assert await app.broker.depth("q") >= 1  # the copy, not yet delivered
        (late,) = await app.broker.fetch(["q"], 5, 30.0, 10.0)
        assert late.body == b"late" and time.time() >= sent + 2.45 and late.count == 1
        await late.ack()
        assert await app.broker.depth("q") == 0
        assert await app.broker.fetch(["q"], 5, 30.0, 0.5) == []


async def test_a_held_record_taken_while_another_is_requeued_is_not_requeued_under_its_holder(kafka_url: str) -> None:
    """The pump writes held records again one by one; a record that falls due during one of
    those writes and is handed out must not be written again and settled under its holder (it
    would run twice, and the holder's extend, nack and dead_letter would do nothing)."""
    broker = KafkaBroker(parse(with_params(with_prefix(kafka_url), partitions="1", hold_ms="100")))
    await broker.start()
    try:
        sent = time.time()
        await broker.publish(Envelope("far", "q", b"far", eta=sent + 600))
        await broker.publish(Envelope("soon", "q", b"soon", eta=sent + 5))  # read in one batch with "far"
        consumer = await broker._consumer("q")
        assert consumer is not None
        real, written, done, taken = consumer.requeue, [], [], asyncio.Event()

        async def requeue(slot: Any, value: bytes, eta: float | None, count: int | None = None) -> None:
            written.append(value)
            if value == b"far":  # this write lasts until "soon" has fallen due and been handed out
                await asyncio.wait_for(taken.wait(), 60)
            await real(slot, value, eta, count)
            done.append(value)

        consumer.requeue = requeue  # the real write, only slower (patched before any record is read)
        (soon,) = await broker.fetch(["q"], 5, 30.0, 30.0)
        assert soon.body == b"soon"
        taken.set()
        await eventually(lambda: done, what="the copy of the held record written")
        await asyncio.sleep(0.5)  # time for a write of "soon", if one were made (the copies of "far"
        # are held and written again every 100 ms meanwhile)
        assert b"soon" not in written, "the record handed out was written again"
        assert await soon.extend(30.0), "its holder lost it"
        await soon.ack()
        assert await broker.fetch(["q"], 5, 30.0, 1.0) == []  # "soon" once; the copies of "far" not due
    finally:
        await broker.stop()


async def test_a_held_record_that_falls_due_while_its_copy_is_written_is_handed_out_once(kafka_url: str) -> None:
    """While the copy of a held record is written it is not handed out, even once due: the
    write settles it, which would fence its holder and run the record twice (it and its copy)."""
    broker = KafkaBroker(parse(with_params(with_prefix(kafka_url), partitions="1", hold_ms="100")))
    await broker.start()
    try:
        assert await broker.fetch(["q"], 5, 30.0, 0.5) == []  # joined: a record is read as soon as written
        consumer = await broker._consumer("q")
        assert consumer is not None
        real, written = consumer.requeue, []
        sent = time.time()

        async def requeue(slot: Any, value: bytes, eta: float | None, count: int | None = None) -> None:
            written.append(value)
            await asyncio.sleep(max(0.0, sent + 3.5 - time.time()))  # lasts until the record is due
            await real(slot, value, eta, count)

        consumer.requeue = requeue  # the real write, only slower
        await broker.publish(Envelope("soon", "q", b"soon", eta=sent + 2))
        (first,) = await broker.fetch(["q"], 5, 30.0, 30.0)
        assert first.body == b"soon" and time.time() >= sent + 1.95
        assert await broker.fetch(["q"], 5, 30.0, 2.0) == [], "handed out twice"
        assert await first.extend(30.0), "its holder lost it"
        assert len(written) <= 1
        await first.ack()
    finally:
        await broker.stop()


async def test_depth_and_purge_leave_out_records_acked_behind_a_delayed_or_leased_one(kafka_url: str) -> None:
    url = with_params(with_prefix(kafka_url), partitions="1")
    broker, elsewhere = KafkaBroker(parse(url)), KafkaBroker(parse(url))
    await broker.start()
    await elsewhere.start()
    try:
        await broker.publish(Envelope("later", "q", b"later", eta=time.time() + 60))
        for i in range(9):
            await broker.publish(Envelope(f"m{i}", "q", b"%d" % i))
        got: list[Any] = []
        while len(got) < 9:
            got += await broker.fetch(["q"], 9 - len(got), 30.0, 10.0)
        assert [d.body for d in got] == [b"%d" % i for i in range(9)]
        for d in got[1:]:
            await d.ack()
        # the delayed one and the leased one: the acked ones behind them are not committed yet
        assert await broker.depth("q") == 2
        # a process without this queue's partitions cannot know what is settled: an upper bound
        assert await elsewhere.depth("q") == 10
        assert await broker.purge("q") == 2
    finally:
        await elsewhere.stop()
        await broker.stop()


async def test_a_foreign_record_on_the_control_topic_is_skipped_even_with_a_huge_number(kafka_app_url: str) -> None:
    target = parse(kafka_app_url)
    first = KafkaBroker(target)
    await first.start()  # creates the control topic
    await first.stop()
    async with raw_producer(kafka_app_url) as producer:
        await producer.send_and_wait(target.control_topic, b'{"0": 1e400}', key=f"purge:{target.topic('q')}".encode())
        await producer.send_and_wait(target.control_topic, b'{"o": 1e400, "n": 1}', key=b"handout:g:0")
    broker = KafkaBroker(target)
    await broker.start()  # read the control topic whole, skipping what is not ours
    try:
        assert broker.control.below(target.topic("q"), 0) == 0
        await broker.publish(Envelope("a", "q", b"a"))
        (a,) = await broker.fetch(["q"], 1, 30.0, 10.0)
        await a.ack()
    finally:
        await broker.stop()


async def test_stop_wakes_a_waiting_fetch_at_once(kafka_url: str) -> None:
    broker = KafkaBroker(parse(with_params(with_prefix(kafka_url), partitions="1")))
    await broker.start()
    fetching = asyncio.ensure_future(broker.fetch(["q"], 1, 30.0, 600.0))
    starting = await eventually_started(broker, "q")
    await eventually(lambda: not starting.joining, what="the consumer joined")
    await broker.stop()
    assert await asyncio.wait_for(fetching, 10) == []


async def test_a_fetch_whose_consumer_is_still_starting_when_the_broker_stops_returns_nothing(kafka_url: str) -> None:
    broker = KafkaBroker(parse(with_params(with_prefix(kafka_url), partitions="1")))
    await broker.start()
    fetching = asyncio.ensure_future(broker.fetch(["q"], 1, 30.0, 600.0))
    await asyncio.sleep(0)  # the fetch is starting the queue's consumer
    assert "q" in broker._consumers and not broker._consumers["q"].done()
    await broker.stop()
    assert await asyncio.wait_for(fetching, 10) == []
    assert await broker.fetch(["q"], 1, 30.0, 600.0) == []  # and so does any fetch after the stop


async def test_a_purge_from_another_app_drops_what_a_consumer_already_read(kafka_app_url: str) -> None:
    worker_side, admin_side = (
        QueueTasks(broker=kafka_app_url, storage="memory"),
        QueueTasks(broker=kafka_app_url, storage="memory"),
    )
    async with worker_side, admin_side:
        await worker_side.broker.publish(Envelope("a", "q", b"first"))
        (first,) = await worker_side.broker.fetch(["q"], 1, 30.0, 10.0)  # joined; "b" will be read ahead
        for i in range(5):
            await worker_side.broker.publish(Envelope(f"b{i}", "q", b"purged"))
        await asyncio.sleep(0.5)  # read into the worker side's buffer by now
        assert await admin_side.broker.purge("q") == 6  # the leased one counts: it is not settled
        await asyncio.sleep(1.0)  # the other app follows the purge topic
        assert await worker_side.broker.fetch(["q"], 10, 30.0, 0.5) == []
        await first.ack()
        assert await admin_side.broker.depth("q") == 0
        await admin_side.broker.publish(Envelope("c", "q", b"after"))
        (after,) = await worker_side.broker.fetch(["q"], 10, 30.0, 10.0)
        assert after.body == b"after"
        await after.ack()


async def test_purged_dead_letters_disappear_for_every_app_and_replay_works(kafka_app_url: str) -> None:
    one, two = QueueTasks(broker=kafka_app_url, storage="memory"), QueueTasks(broker=kafka_app_url, storage="memory")
    async with one, two:
        for body in (b"one", b"two", b"three"):
            await one.broker.publish(Envelope(body.decode(), "q", body))
        deliveries = await one.broker.fetch(["q"], 3, 30.0, 10.0)
        while len(deliveries) < 3:
            deliveries += await one.broker.fetch(["q"], 3, 30.0, 10.0)
        for d in deliveries:
            await d.dead_letter(f"reason {d.body.decode()}")
        dead = await two.broker.dead_letters(10)
        assert sorted((d.body, d.reason, d.queue) for d in dead) == [
            (b"one", "reason one", "q"),
            (b"three", "reason three", "q"),
            (b"two", "reason two", "q"),
        ]
        assert await two.broker.purge_dead([dead[0].id, "no-such-id"]) == 1
        assert sorted(d.id for d in await one.broker.dead_letters(10)) == sorted(d.id for d in dead[1:])
        assert await one.replay(dead[1].id) == 1  # back to its queue, and gone from the dead letters
        assert [d.id for d in await two.broker.dead_letters(10)] == [dead[2].id]
        (again,) = await one.broker.fetch(["q"], 3, 30.0, 10.0)
        assert again.body == dead[1].body
        await again.ack()
        assert await one.purge_dead() == 1
        assert await two.broker.dead_letters(10) == []


def test_url_options_reach_the_clients() -> None:
    target = parse("kafka://u:p%40ss@k1,k2:9093/?prefix=jobs&group=workers&partitions=3&session_timeout_ms=6000")
    assert target.bootstrap == ("k1:9092", "k2:9093")
    assert (target.topic("default"), target.group_id("default")) == ("jobs.default", "workers.default")
    assert target.numbers["partitions"] == 3 and target.consumer_options()["rebalance_timeout_ms"] == 6000
    assert target.security == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "u",
        "sasl_plain_password": "p@ss",
    }
    odd = target.topic("emails/high priority")
    assert odd.startswith("jobs.emails_high_priority-") and odd != target.topic("emails/high_priority")
