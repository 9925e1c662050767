"""Bad input on the wire, pushed straight into each broker's storage (never through the client):
the worker stays up, each bad message is dead-lettered with a readable reason, and the good
messages around it succeed."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qtasks.asyncio import QueueTasks
from qtasks.messages import Message
from qtasks.protocols import Envelope
from qtasks.testing import running_worker

MAX_PAYLOAD = 64 * 1024
GOOD = Message(name="ok", args=[1]).to_wire()

#: Each bad body, and the words its dead-letter reason must contain.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
BAD = st.one_of(
    st.binary(min_size=1, max_size=200).filter(lambda b: not _is_json_object(b)).map(lambda b: (b, "malformed")),
    st.builds(lambda cut: (json.dumps(GOOD).encode()[:cut], "cannot decode"), st.integers(1, 40)),
    json_values.filter(lambda v: not isinstance(v, dict)).map(
        lambda v: (json.dumps(v).encode(), "expected a JSON object")
    ),
    st.sampled_from(["id", "name", "args", "kwargs", "priority", "attempt", "headers", "eta"]).flatmap(
        lambda key: json_values.filter(lambda v, key=key: not _fits(key, v)).map(
            lambda v, key=key: (json.dumps({**GOOD, key: v}).encode(), "malformed")
        )
    ),
    st.text(min_size=1, max_size=12)
    .filter(lambda k: k not in GOOD)
    .map(lambda key: (json.dumps({**GOOD, key: 1}).encode(), "unknown field")),
    st.text(min_size=1, max_size=30)
    .filter(lambda n: n != "ok")
    .map(lambda name: (json.dumps({**GOOD, "name": name, "id": f"id-{name}"}).encode(), "unknown task")),
    st.just((b"{" + b" " * (MAX_PAYLOAD + 10) + b"}", "over max_payload")),
)


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except Exception:
        return False


def _fits(key: str, value: Any) -> bool:
    """Whether ``value`` would be a valid value of message field ``key`` (then it is not bad)."""
    try:
        Message.from_wire({**GOOD, key: value})
    except Exception:
        return False
    return True


Inject = Callable[[QueueTasks, bytes], Awaitable[None]]


async def inject_memory(app: QueueTasks, raw: bytes) -> None:
    await app.broker.publish(Envelope("raw", "default", raw))


def sqlite_injector(path: Path) -> Inject:
    async def inject(app: QueueTasks, raw: bytes) -> None:
        with sqlite3.connect(path) as conn:  # a stranger writing into the queue table
            conn.execute(
                "INSERT INTO qtasks_queue (queue, priority, visible_at, body) VALUES ('default', 0, ?, ?)",
                (time.time(), raw),
            )
        app.broker._notify()

    return inject


def redis_injector(url: str) -> Inject:
    async def inject(app: QueueTasks, raw: bytes) -> None:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(url.split("?")[0])
        prefix = url.split("prefix=")[1]
        async with client:  # a stranger pushing onto the queue's list with redis-py
            await client.rpush(f"{prefix}:q:default:in", raw)
            await client.rpush(f"{prefix}:q:default:wake", b"1")

    return inject


def postgres_injector(url: str) -> Inject:
    async def inject(app: QueueTasks, raw: bytes) -> None:
        import asyncpg
        from qtasks_postgres.target import parse

        conn = await asyncpg.connect(parse(url).dsn)
        try:  # a stranger INSERTing into the queue table with asyncpg; the table's trigger wakes the worker
            await conn.execute(f"INSERT INTO {app.broker.db.names.queue} (queue, body) VALUES ('default', $1)", raw)
        finally:
            await conn.close()

    return inject


def kafka_injector(url: str) -> Inject:
    async def inject(app: QueueTasks, raw: bytes) -> None:
        from aiokafka import AIOKafkaProducer
        from qtasks_kafka.target import parse

        target = parse(url)
        producer = AIOKafkaProducer(bootstrap_servers=list(target.bootstrap), acks="all")
        await producer.start()
        try:  # a stranger producing onto the queue's topic with aiokafka: no key, no headers
            await producer.send_and_wait(target.topic("default"), raw)
        finally:
            await producer.stop()

    return inject


@asynccontextmanager
async def backend(kind: str, tmp_path: Path, servers: dict[str, str]) -> AsyncIterator[tuple[QueueTasks, Inject]]:
    redis_url, postgres_dsn = servers.get("redis", ""), servers.get("postgres", "")
    if kind == "memory":
        app, inject = QueueTasks(broker="memory", storage="memory", max_payload=MAX_PAYLOAD), inject_memory
    elif kind == "redis":
        url = f"{redis_url}?prefix=wire{time.monotonic_ns()}"
        app, inject = QueueTasks(broker=url, max_payload=MAX_PAYLOAD), redis_injector(url)
    elif kind == "postgres":
        url = f"{postgres_dsn}{'&' if '?' in postgres_dsn else '?'}prefix=wire{time.monotonic_ns()}"
        app, inject = QueueTasks(broker=url, max_payload=MAX_PAYLOAD), postgres_injector(url)
    elif kind == "kafka":
        url = f"{servers['kafka']}{'&' if '?' in servers['kafka'] else '?'}prefix=wire{time.monotonic_ns()}"
        app, inject = QueueTasks(broker=url, storage="memory", max_payload=MAX_PAYLOAD), kafka_injector(url)
    else:
        path = tmp_path / f"wire-{time.monotonic_ns()}.db"
        app, inject = QueueTasks(broker=f"sqlite:///{path}", max_payload=MAX_PAYLOAD), sqlite_injector(path)

    @app.task
    async def ok(x: int) -> int:
        return x

    async with app:
        yield app, inject


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis", "postgres"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.lists(BAD, min_size=1, max_size=4))
async def test_bad_messages_are_dead_lettered_and_good_ones_still_run(
    kind: str, tmp_path: Path, redis_url: str, postgres_dsn: str, bad: list[tuple[bytes, str]]
) -> None:
    await drill(kind, tmp_path, {"redis": redis_url, "postgres": postgres_dsn}, bad)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.lists(BAD, min_size=1, max_size=4))
async def test_bad_records_on_kafka_are_dead_lettered_and_good_ones_still_run(
    tmp_path: Path, kafka_url: str, bad: list[tuple[bytes, str]]
) -> None:
    """The same drill on Kafka, with fewer examples: each one joins a consumer group of its own."""
    await drill("kafka", tmp_path, {"kafka": kafka_url}, bad)


async def drill(kind: str, tmp_path: Path, servers: dict[str, str], bad: list[tuple[bytes, str]]) -> None:
    async with backend(kind, tmp_path, servers) as (app, inject), running_worker(app) as worker:
        good = []
        for raw, _ in bad:
            good.append(await app.add_task("ok", len(good)))
            await inject(app, raw)
        good.append(await app.add_task("ok", len(good)))
        for i, record in enumerate(good):
            assert (await app.wait(record.id, 30)).returning == i
        deadline = time.monotonic() + 30
        while len(dead := await app.dead_letters(1000)) < len(bad) and time.monotonic() < deadline:
            await asyncio_sleep(0.02)
        assert worker.ready.is_set()
    assert sorted(d.body for d in dead) == sorted(raw for raw, _ in bad)
    for d in dead:
        expected = next(words for raw, words in bad if raw == d.body)
        assert d.reason.isprintable() and len(d.reason) < 500
        assert expected in d.reason or (expected == "malformed" and "malformed message" in d.reason), d.reason


async def asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
