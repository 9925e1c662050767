"""Floors: the work of a qtasks row done with the backend's client directly, no framework."""

from __future__ import annotations

import json
import sqlite3
import statistics
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
