"""Floors: the work of a qtasks row done with the backend's client directly, no framework."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from qtasks.builtin.sqlite import ACK, BACKLOG, FINAL_OF, INSERT, READY, SAVE, SCHEMA, WAITING, claim_sql

T = TypeVar("T")

#: The floor and the qtasks row take turns, this many blocks each, at submitting and at round
#: trips: the floor calls ``between(phase)`` after each of its blocks ("submit", "trips"), and
#: once after its drain ("drain"), and the qtasks row does the same amount of work then.
BLOCKS = 10


def blocks(items: Sequence[T]) -> list[Sequence[T]]:
    """``items`` in BLOCKS consecutive blocks (the qtasks row splits its work the same way)."""
    size = -(-len(items) // BLOCKS)
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _alone(_: str) -> None:
    """``between`` for a floor measured on its own."""


async def _submits(
    submit: Callable[[bytes], Awaitable[Any]], bodies: list[bytes], between: Callable[[str], Awaitable[None]]
) -> float:
    """Submit ``bodies`` one at a time, in blocks, the qtasks row's turn after each; tasks/s."""
    elapsed = 0.0
    for block in blocks(bodies):
        start = time.perf_counter()
        for body in block:
            await submit(body)
        elapsed += time.perf_counter() - start
        await between("submit")
    return len(bodies) / elapsed


async def _trips(
    trip: Callable[[int], Awaitable[float]], trips: int, between: Callable[[str], Awaitable[None]]
) -> list[float]:
    """50 round trips to warm up, then ``trips`` timed ones in blocks; their latencies."""
    for i in range(50):
        await trip(i)
    latencies = []
    for block in blocks(range(trips)):
        latencies += [await trip(i) for i in block]
        await between("trips")
    return latencies


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    return conn


def _tx(conn: sqlite3.Connection, *writes: tuple[str, list[tuple[Any, ...]]]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for sql, rows in writes:
        conn.executemany(sql, rows)
    conn.execute("COMMIT")


def _record(task_id: str, status: str, i: int) -> tuple[Any, ...]:
    data = json.dumps({"id": task_id, "name": "noop", "status": status, "args": [i]}).encode()
    return (task_id, status, data, time.time() + 86400, time.time())


def _submit(conn: sqlite3.Connection, i: int) -> str:
    task_id = str(uuid.uuid4())
    body = json.dumps({"v": 1, "id": task_id, "name": "noop", "args": [i], "kwargs": {}}).encode()
    # the message and its `new` record in one transaction, as the app's one connection commits them
    _tx(conn, (INSERT, [("default", 0, time.time(), body, task_id)]), (SAVE, [_record(task_id, "new", i)]))
    return task_id


def _drain_batch(conn: sqlite3.Connection, limit: int) -> int:
    token = uuid.uuid4().hex
    now = time.time()
    conn.execute(WAITING.format("?"), ("default", now)).fetchone()  # nothing waits here: no DUE
    (ready,) = conn.execute(READY.format(queues="?"), ("default", now, BACKLOG)).fetchone()
    rows = conn.execute(claim_sql(1, ready >= BACKLOG), (token, now + 10, "default", now, limit, limit)).fetchall()
    if not rows:
        return 0
    ids = [json.loads(body)["id"] for _, _, body, _, _ in rows]
    # which records are final already: none, so every call starts at once and `running` is skipped
    conn.execute(FINAL_OF.format(ids=",".join("?" * len(ids))), ids).fetchall()
    # each record with its ack (ack_with), the batch's in one transaction (group commit)
    _tx(conn, (SAVE, [_record(task_id, "success", 0) for task_id in ids]), (ACK, [(seq, token) for _, seq, *_ in rows]))
    return len(rows)


def sqlite_floor(path: str, n: int, trips: int, between: Callable[[str], None] = lambda _: None) -> Any:
    """Synchronous (run it in a thread to interleave): ``between`` is a plain function here."""
    from run import Row

    conn = _connect(path)
    elapsed = 0.0
    for block in blocks(range(n)):
        start = time.perf_counter()
        for i in block:
            _submit(conn, i)
        elapsed += time.perf_counter() - start
        between("submit")
    submit = n / elapsed

    start = time.perf_counter()
    done = 0
    while done < n:
        done += _drain_batch(conn, 50)
    drain = n / (time.perf_counter() - start)
    between("drain")

    stop, going = threading.Event(), threading.Event()
    going.set()
    consumer = _connect(path)

    def consume() -> None:
        while not stop.is_set():
            going.wait()  # not in the qtasks row's turns: this consumer spins
            if not _drain_batch(consumer, 50):
                time.sleep(0)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    latencies = []
    for block in blocks(range(trips)):
        for i in block:
            t0 = time.perf_counter()
            task_id = _submit(conn, i)
            while conn.execute("SELECT status FROM qtasks_records WHERE id = ?", (task_id,)).fetchone()[0] != "success":
                time.sleep(0)
            latencies.append(time.perf_counter() - t0)
        going.clear()
        between("trips")
        going.set()
    stop.set()
    thread.join()
    p99 = sorted(latencies)[int(0.99 * len(latencies))]
    return Row("sqlite floor (sqlite3, same SQL)", submit, drain, statistics.median(latencies) * 1000, p99 * 1000)


# --------------------------------------------------------------------------- redis

#: The floor's message: what a framework would put on the wire, as JSON.
REDIS_QUEUE, REDIS_RESULT = "floor:queue", b'{"status": "success", "returning": 0}'


def _redis_message(i: int, stop: bool = False) -> bytes:
    body = {"v": 1, "id": str(uuid.uuid4()), "name": "noop", "args": [i], "kwargs": {}}
    return json.dumps({**body, "stop": True} if stop else body).encode()


async def redis_consume(url: str, n: int) -> None:
    """The floor's worker process: one coroutine, BRPOP + one write per task.

    First it drains ``n`` queued tasks (BRPOP + SET of the result) and prints the rate; then it
    answers round trips until told to stop: BRPOP, then the same SET of the result and an LPUSH
    of it onto the caller's reply key, pipelined in one round trip (qtasks' worker, too, stores
    the record and wakes the caller in one step).
    """
    from redis.asyncio import Redis

    r = Redis.from_url(url, protocol=2, socket_timeout=None)  # redis-py 8 times reads out after 5 s by default
    start = time.perf_counter()
    for _ in range(n):
        _, body = await r.brpop([REDIS_QUEUE], 0)
        await r.set(f"floor:result:{json.loads(body)['id']}", REDIS_RESULT, ex=86400)
    print(n / (time.perf_counter() - start), flush=True)
    while True:
        _, body = await r.brpop([REDIS_QUEUE], 0)
        message = json.loads(body)
        if message.get("stop"):
            break
        async with r.pipeline(transaction=False) as pipe:
            pipe.set(f"floor:result:{message['id']}", REDIS_RESULT, ex=86400)
            pipe.lpush(f"floor:reply:{message['id']}", REDIS_RESULT)
            await pipe.execute()
    await r.aclose()


async def redis_floor(url: str, n: int, trips: int, between: Callable[[str], Awaitable[None]] = _alone) -> Any:
    """Producer: one LPUSH per task; caller: LPUSH then BLPOP on its reply key. The consumer is
    a separate process, as qtasks' worker is."""
    from redis.asyncio import Redis
    from run import Row

    r = Redis.from_url(url, protocol=2, socket_timeout=None)  # redis-py 8 times reads out after 5 s by default
    await r.delete(REDIS_QUEUE)
    for i in range(200):  # warm up, as the qtasks row does
        await r.lpush("floor:warmup", _redis_message(i))
    submit = await _submits(lambda body: r.lpush(REDIS_QUEUE, body), [_redis_message(i) for i in range(n)], between)

    consumer = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "redis-consume", url, str(n), stdout=asyncio.subprocess.PIPE
    )

    async def trip(i: int) -> float:
        body = _redis_message(i)
        t0 = time.perf_counter()
        await r.lpush(REDIS_QUEUE, body)
        reply = await r.blpop([f"floor:reply:{json.loads(body)['id']}"], 10)
        assert reply is not None, "the floor consumer did not answer"
        return time.perf_counter() - t0

    try:
        assert consumer.stdout is not None
        drain = float(await consumer.stdout.readline())
        await between("drain")
        latencies = await _trips(trip, trips, between)
        await r.lpush(REDIS_QUEUE, _redis_message(0, stop=True))
        await asyncio.wait_for(consumer.wait(), 30)
    finally:
        if consumer.returncode is None:
            consumer.kill()
            await consumer.wait()
        await r.aclose()
    p99 = sorted(latencies)[int(0.99 * len(latencies))]
    return Row("redis-py floor (LPUSH/BRPOP)", submit, drain, statistics.median(latencies) * 1000, p99 * 1000)


if __name__ == "__main__" and sys.argv[1:2] == ["redis-consume"]:
    asyncio.run(redis_consume(sys.argv[2], int(sys.argv[3])))


# --------------------------------------------------------------------------- postgres
#
# The very statements qtasks-postgres runs (its claim statement and its apply function, from the
# schema it creates), sent with asyncpg directly: a submit is one apply call (the record and the
# message), a worker claims up to 50 (which are fresh: none is final, so none stores `running`)
# and stores `success` with the acks, and a caller waits for the notification of its record on the
# `done` channel.


def _pg_sql() -> Any:
    from qtasks_postgres.schema import Statements
    from qtasks_postgres.target import Names

    return Names("public", "floor"), Statements(Names("public", "floor"))


async def _pg_connect(dsn: str) -> Any:
    import asyncpg
    from qtasks_postgres.database import SERVER_SETTINGS

    return await asyncpg.connect(dsn, server_settings=SERVER_SETTINGS)


def _pg_save(task_id: str, status: str, i: int) -> Any:
    from qtasks_postgres.writes import Save

    return Save(
        task_id, status, json.dumps({"id": task_id, "name": "noop", "status": status, "args": [i]}).encode(), 86400.0
    )


async def _pg_apply(conn: Any, sql: Any, writes: list[Any]) -> None:
    from qtasks_postgres.writes import arguments

    await conn.fetchrow(sql.apply, *arguments(writes))


async def _pg_submit(conn: Any, sql: Any, body: bytes) -> None:
    """One submit: the `new` record and the message, in one apply call."""
    from qtasks_postgres.writes import Publish

    message = json.loads(body)
    new = _pg_save(message["id"], "new", message["args"][0])
    await _pg_apply(conn, sql, [new, Publish("default", 0, None, body, message["id"])])


async def _pg_work(conn: Any, sql: Any, limit: int) -> tuple[int, bool]:
    """Claim up to ``limit`` (fresh), store `success` and the acks; (how many, stop?)."""
    from qtasks_postgres.writes import Ack

    token = uuid.uuid4()
    rows = [r for r in await conn.fetch(sql.claim, token, 10.0, ["default"], limit, True) if r["seq"] is not None]
    if not rows:
        return 0, False
    messages = [json.loads(r["body"]) for r in rows]
    done = [_pg_save(m["id"], "success", 0) for m in messages]
    await _pg_apply(conn, sql, [*done, *(Ack(r["seq"], token) for r in rows)])
    return len(rows), any(m.get("stop") for m in messages)


async def postgres_consume(dsn: str, n: int) -> None:
    """The floor's worker process: drains ``n`` queued tasks and prints the rate, then serves
    round trips, woken by the queue channel's notifications, until told to stop."""
    names, sql = _pg_sql()
    conn = await _pg_connect(dsn)
    start = time.perf_counter()
    done = 0
    while done < n:
        done += (await _pg_work(conn, sql, 50))[0]
    print(n / (time.perf_counter() - start), flush=True)
    ready = asyncio.Event()
    await conn.add_listener(names.queue_channel, lambda *_: ready.set())
    while True:
        ready.clear()
        found, stop = await _pg_work(conn, sql, 50)
        if stop:
            break
        if not found:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), 1.0)
    await conn.close()


async def postgres_floor(dsn: str, n: int, trips: int, between: Callable[[str], Awaitable[None]] = _alone) -> Any:
    from qtasks_postgres.schema import ensure
    from run import Row

    names, sql = _pg_sql()
    conn = await _pg_connect(dsn)
    await ensure(conn, names, create_schema=False)
    await conn.execute(f"TRUNCATE {names.queue}, {names.records}")
    for i in range(200):  # warm up, as the qtasks row does
        await _pg_submit(conn, sql, _redis_message(i))
    await conn.execute(f"TRUNCATE {names.queue}")
    submit = await _submits(lambda body: _pg_submit(conn, sql, body), [_redis_message(i) for i in range(n)], between)

    consumer = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "postgres-consume", dsn, str(n), stdout=asyncio.subprocess.PIPE
    )
    waiting: dict[str, asyncio.Future[None]] = {}

    def finished(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for task_id in payload.split("\n"):
            if task_id in waiting and not waiting[task_id].done():
                waiting[task_id].set_result(None)

    async def trip(i: int) -> float:
        body = _redis_message(i)
        task_id = json.loads(body)["id"]
        waiting[task_id] = replied = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        await _pg_submit(conn, sql, body)
        await asyncio.wait_for(replied, 10)
        del waiting[task_id]
        return time.perf_counter() - t0

    try:
        assert consumer.stdout is not None
        drain = float(await consumer.stdout.readline())
        await between("drain")
        listener = await _pg_connect(dsn)
        await listener.add_listener(names.done_channel, finished)
        latencies = await _trips(trip, trips, between)
        await _pg_submit(conn, sql, _redis_message(0, stop=True))
        await asyncio.wait_for(consumer.wait(), 30)
        await listener.close()
    finally:
        if consumer.returncode is None:
            consumer.kill()
            await consumer.wait()
        await conn.close()
    p99 = sorted(latencies)[int(0.99 * len(latencies))]
    return Row("asyncpg floor (same SQL)", submit, drain, statistics.median(latencies) * 1000, p99 * 1000)


if __name__ == "__main__" and sys.argv[1:2] == ["postgres-consume"]:
    asyncio.run(postgres_consume(sys.argv[2], int(sys.argv[3])))


# --------------------------------------------------------------------------- kafka
#
# aiokafka directly: a submit is one send_and_wait (acks="all", keyed by the message id, onto a
# topic of 8 partitions, as qtasks-kafka creates); a consumer process in a consumer group
# (auto-commit off) reads batches with getmany and commits after each; a caller sends a request
# and waits for the consumer's reply on a reply topic (the consumer produces it, then commits).
# Fetch wait and group timings are those of the URL's options, with qtasks-kafka's defaults.

#: qtasks-kafka's defaults (target.py) for the options the floor's clients use.
KAFKA_DEFAULTS = {"session_timeout_ms": 10_000, "heartbeat_interval_ms": 3_000, "fetch_max_wait_ms": 20}


def _kafka_options(url: str) -> tuple[list[str], dict[str, int]]:
    """Bootstrap servers and the group consumer's timings from a ``kafka://`` URL."""
    from urllib.parse import parse_qsl

    netloc, _, query = url.removeprefix("kafka://").partition("?")
    hosts = [h if ":" in h else f"{h}:9092" for h in netloc.rstrip("/").split(",")]
    own = {k: int(v) for k, v in parse_qsl(query) if k in (*KAFKA_DEFAULTS, "rebalance_timeout_ms")}
    timings = {**KAFKA_DEFAULTS, **own}
    timings.setdefault("rebalance_timeout_ms", timings["session_timeout_ms"])
    return hosts, timings


def _kafka_producer(hosts: list[str]) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(bootstrap_servers=hosts, acks="all", enable_idempotence=False, linger_ms=0)


async def kafka_consume(url: str, topic: str, reply_topic: str, n: int) -> None:
    """The floor's worker process: one group consumer, getmany + one commit per batch.

    First it drains ``n`` queued tasks and prints the rate (from before it joins the group, as
    a worker's drain starts before its consumer joins); then it answers round trips (a reply
    produced onto ``reply_topic`` per request, then the commit) until told to stop.
    """
    from aiokafka import AIOKafkaConsumer

    hosts, timings = _kafka_options(url)
    producer = _kafka_producer(hosts)
    await producer.start()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=hosts,
        group_id=f"{topic}-group",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **timings,
    )
    start = time.perf_counter()
    await consumer.start()
    done = 0
    while done < n:
        for batch in (await consumer.getmany(timeout_ms=1000)).values():
            for record in batch:
                json.loads(record.value)
            done += len(batch)
        await consumer.commit()
    print(n / (time.perf_counter() - start), flush=True)
    stop = False
    while not stop:
        for batch in (await consumer.getmany(timeout_ms=1000)).values():
            for record in batch:
                message = json.loads(record.value)
                stop = stop or bool(message.get("stop"))
                if not message.get("stop"):
                    await producer.send_and_wait(reply_topic, REDIS_RESULT, key=record.key)
        await consumer.commit()
    await consumer.stop()
    await producer.stop()


async def kafka_floor(url: str, n: int, trips: int, between: Callable[[str], Awaitable[None]] = _alone) -> Any:
    """Producer: one send_and_wait per task; caller: send, then read the reply topic (no group)
    up to its reply. The consumer is a separate process, as qtasks' worker is."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from run import Row

    hosts, timings = _kafka_options(url)
    base = f"floor-{uuid.uuid4().hex[:12]}"
    topic, reply_topic, warmup = f"{base}.default", f"{base}-reply", f"{base}.warmup"
    admin = AIOKafkaAdminClient(bootstrap_servers=hosts)
    await admin.start()
    replication = max(1, min(3, len((await admin.describe_cluster())["brokers"])))
    wanted = [NewTopic(topic, 8, replication), NewTopic(reply_topic, 1, replication), NewTopic(warmup, 8, replication)]
    await admin.create_topics(wanted)
    await admin.close()
    producer = _kafka_producer(hosts)
    await producer.start()
    replies = AIOKafkaConsumer(
        bootstrap_servers=hosts, enable_auto_commit=False, fetch_max_wait_ms=timings["fetch_max_wait_ms"]
    )
    await replies.start()
    consumer = None
    try:
        for i in range(200):  # warm up, as the qtasks row does
            await producer.send_and_wait(warmup, _redis_message(i))
        await producer.partitions_for(topic)
        submit = await _submits(
            lambda body: producer.send_and_wait(topic, body, key=json.loads(body)["id"].encode()),
            [_redis_message(i) for i in range(n)],
            between,
        )

        consumer = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "kafka-consume", url, topic, reply_topic, str(n), stdout=asyncio.subprocess.PIPE
        )
        assert consumer.stdout is not None
        reply_tp = TopicPartition(reply_topic, 0)
        replies.assign([reply_tp])
        await replies.seek_to_end(reply_tp)
        await replies.position(reply_tp)  # resolved now, before any reply can be written
        drain = float(await consumer.stdout.readline())
        await between("drain")

        async def trip(i: int) -> float:
            body = _redis_message(i)
            key = json.loads(body)["id"].encode()
            t0 = time.perf_counter()
            await producer.send_and_wait(topic, body, key=key)
            while (await asyncio.wait_for(replies.getone(), 10)).key != key:
                pass
            return time.perf_counter() - t0

        latencies = await _trips(trip, trips, between)
        await producer.send_and_wait(topic, _redis_message(0, stop=True))
        await asyncio.wait_for(consumer.wait(), 30)
    finally:
        if consumer is not None and consumer.returncode is None:
            consumer.kill()
            await consumer.wait()
        await replies.stop()
        await producer.stop()
    p99 = sorted(latencies)[int(0.99 * len(latencies))]
    return Row("aiokafka floor (send/getmany)", submit, drain, statistics.median(latencies) * 1000, p99 * 1000)


if __name__ == "__main__" and sys.argv[1:2] == ["kafka-consume"]:
    asyncio.run(kafka_consume(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
