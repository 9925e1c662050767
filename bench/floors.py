"""Floors: the work of a qtasks row done with the backend's client directly, no framework."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import sys
import threading
import time
import uuid
from typing import Any

from qtasks.builtin.sqlite import ACK, CLAIM, INSERT, SAVE, SCHEMA


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    return conn


def _tx(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(sql, rows)
    conn.execute("COMMIT")


def _record(task_id: str, status: str, i: int) -> tuple[Any, ...]:
    data = json.dumps({"id": task_id, "name": "noop", "status": status, "args": [i]}).encode()
    return (task_id, status, data, time.time() + 86400, time.time())


def _submit(records: sqlite3.Connection, queue: sqlite3.Connection, i: int) -> str:
    task_id = str(uuid.uuid4())
    _tx(records, SAVE, [_record(task_id, "new", i)])
    body = json.dumps({"v": 1, "id": task_id, "name": "noop", "args": [i], "kwargs": {}}).encode()
    _tx(queue, INSERT, [("default", 0, time.time(), body)])
    return task_id


def _drain_batch(records: sqlite3.Connection, queue: sqlite3.Connection, limit: int) -> int:
    token = uuid.uuid4().hex
    now = time.time()
    rows = queue.execute(CLAIM.format(queues="?"), (token, now + 10, "default", now, limit)).fetchall()
    if not rows:
        return 0
    ids = [json.loads(body)["id"] for _, _, body, _ in rows]
    _tx(records, SAVE, [_record(task_id, "running", 0) for task_id in ids])
    _tx(records, SAVE, [_record(task_id, "success", 0) for task_id in ids])
    _tx(queue, ACK, [(seq, token) for seq, _, _, _ in rows])
    return len(rows)


def sqlite_floor(path: str, n: int, trips: int) -> Any:
    from run import Row

    records, queue = _connect(path), _connect(path)
    start = time.perf_counter()
    for i in range(n):
        _submit(records, queue, i)
    submit = n / (time.perf_counter() - start)

    start = time.perf_counter()
    done = 0
    while done < n:
        done += _drain_batch(records, queue, 50)
    drain = n / (time.perf_counter() - start)

    stop = threading.Event()
    consumer_records, consumer_queue = _connect(path), _connect(path)

    def consume() -> None:
        while not stop.is_set():
            if not _drain_batch(consumer_records, consumer_queue, 50):
                time.sleep(0)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    latencies = []
    for i in range(trips):
        t0 = time.perf_counter()
        task_id = _submit(records, queue, i)
        while records.execute("SELECT status FROM qtasks_records WHERE id = ?", (task_id,)).fetchone()[0] != "success":
            time.sleep(0)
        latencies.append(time.perf_counter() - t0)
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
    answers round trips (BRPOP + LPUSH of the result onto the caller's reply key) until told to
    stop.
    """
    from redis.asyncio import Redis

    r = Redis.from_url(url, protocol=2)
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
        await r.lpush(f"floor:reply:{message['id']}", REDIS_RESULT)
    await r.aclose()


async def redis_floor(url: str, n: int, trips: int) -> Any:
    """Producer: one LPUSH per task; caller: LPUSH then BLPOP on its reply key. The consumer is
    a separate process, as qtasks' worker is."""
    from redis.asyncio import Redis
    from run import Row

    r = Redis.from_url(url, protocol=2)
    await r.delete(REDIS_QUEUE)
    for i in range(200):  # warm up, as the qtasks row does
        await r.lpush("floor:warmup", _redis_message(i))
    bodies = [_redis_message(i) for i in range(n)]
    start = time.perf_counter()
    for body in bodies:
        await r.lpush(REDIS_QUEUE, body)
    submit = n / (time.perf_counter() - start)

    consumer = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "redis-consume", url, str(n), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert consumer.stdout is not None
        drain = float(await consumer.stdout.readline())
        latencies = []
        for i in range(50 + trips):
            body = _redis_message(i)
            t0 = time.perf_counter()
            await r.lpush(REDIS_QUEUE, body)
            reply = await r.blpop([f"floor:reply:{json.loads(body)['id']}"], 10)
            assert reply is not None, "the floor consumer did not answer"
            if i >= 50:
                latencies.append(time.perf_counter() - t0)
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
