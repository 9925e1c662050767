"""What only the embedded sqlite backend does: which deliveries are fresh, how rows that wait are
marked, and files made before the queue table had a ``task_id`` column or the present marks."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest
from qtasks.asyncio import QueueTasks
from qtasks.builtin.sqlite import BACKLOG, DUE, LATER, READY, WAITING, WAITS, claim_sql
from qtasks.messages import Message, Record, Status
from qtasks.protocols import Envelope
from qtasks.testing import running_worker

from tests.backends.kit import check_ack_with, check_cancelled_fetches_hand_nothing_out, check_fresh_marks, leased_one

#: qtasks_queue as files made before ``task_id`` have it, with a message queued the old way.
OLD_QUEUE = """
CREATE TABLE qtasks_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, priority INTEGER NOT NULL,
    visible_at REAL NOT NULL, body BLOB NOT NULL, token TEXT, count INTEGER NOT NULL DEFAULT 0);
"""


async def test_the_claim_marks_fresh_only_first_deliveries_of_tasks_whose_record_is_not_final(
    sqlite_url: str,
) -> None:
    await check_fresh_marks(sqlite_url)


async def test_a_file_from_before_the_task_id_column_gets_it_and_its_queued_messages_run(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    app = QueueTasks(broker=f"sqlite:///{path}")

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    queued = Message(name="double", args=[21])
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_QUEUE)
        conn.execute(
            "INSERT INTO qtasks_queue (queue, priority, visible_at, body) VALUES ('default', 0, ?, ?)",
            (time.time(), json.dumps(queued.to_wire()).encode()),
        )
    async with app:
        with sqlite3.connect(path) as conn:
            columns = [row[1] for row in conn.execute("PRAGMA table_info(qtasks_queue)")]
        assert columns[-1] == "task_id"
        async with running_worker(app):
            old = await app.wait(queued.id, 10)  # no task id on its row: run after `running` is stored
            new = await double.add_task(4, timeout=10)
        assert (old.status, old.returning, new.status, new.returning) == ("success", 42, "success", 8)
    async with QueueTasks(broker=f"sqlite:///{path}"):  # and the next start leaves it as it is
        pass


async def test_a_file_whose_waiting_rows_were_marked_against_2_to_the_40_is_read_right(tmp_path: Path) -> None:
    """Files from before WAITS marked a waiting row by priority >= LATER, which a negative priority
    plus LATER never reached, so it ran after every ready row once due. Opened now, the old partial
    index gives way to the new one and such a row runs in its own priority order."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    async with QueueTasks(broker=url, storage="memory") as app:
        await app.broker.publish(Envelope("ready", "default", b"ready", 0))
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("DROP INDEX qtasks_queue_waiting")
        conn.execute(f"CREATE INDEX qtasks_queue_later ON qtasks_queue (queue, visible_at) WHERE priority >= {LATER}")
        conn.execute(
            "INSERT INTO qtasks_queue (queue, priority, visible_at, body) VALUES ('default', ?, ?, ?)",
            (-5 + LATER, time.time() - 1, b"urgent"),
        )
    async with QueueTasks(broker=url, storage="memory") as app:
        found = await app.broker.fetch(["default"], 2, 30.0, 1.0)
        assert [d.body for d in found] == [b"urgent", b"ready"]
        with sqlite3.connect(tmp_path / "old.db") as conn:
            indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "qtasks_queue_waiting" in indexes and "qtasks_queue_later" not in indexes


async def test_a_backlog_is_claimed_in_priority_order_by_walking_the_priority_index(sqlite_url: str) -> None:
    """With BACKLOG or more rows ready, the claim walks the (queue, priority, seq) index and stops
    after its limit, instead of reading and sorting every ready row; the order is the same."""
    async with QueueTasks(broker=sqlite_url, storage="memory") as app:
        broker = app.broker
        later = time.time() + 3600
        await asyncio.gather(*(broker.publish(Envelope(f"d{i}", "default", b"delayed", 0, later)) for i in range(5)))
        await asyncio.gather(*(broker.publish(Envelope(f"b{i}", "default", b"bulk", 5)) for i in range(BACKLOG)))
        await asyncio.gather(*(broker.publish(Envelope(f"u{i}", "default", b"%d" % i, 1)) for i in range(10)))
        found = await broker.fetch(["default"], 15, 30.0, 1.0)
        assert [d.body for d in found] == [b"%d" % i for i in range(10)] + [b"bulk"] * 5
        await asyncio.gather(*(d.ack() for d in found))
        await asyncio.gather(*(broker.publish(Envelope(f"o{i}", "other", b"o%d" % i, 0)) for i in range(3)))
        both = await broker.fetch(["default", "other"], 5, 30.0, 1.0)  # one index walk per queue
        assert [d.body for d in both] == [b"o0", b"o1", b"o2", b"bulk", b"bulk"]
        await asyncio.gather(*(d.ack() for d in both))
        with sqlite3.connect(sqlite_url.split(":///", 1)[1]) as conn:
            (ready,) = conn.execute(READY.format(queues="?"), ("default", time.time(), BACKLOG)).fetchone()
            plans = {
                (queues, backlog): [
                    row[3]
                    for row in conn.execute(
                        f"EXPLAIN QUERY PLAN {claim_sql(queues, backlog)}",
                        ("t", 0.0, *[arg for q in ("default", "other")[:queues] for arg in (q, time.time(), 50)], 50),
                    )
                ]
                for queues in (1, 2)
                for backlog in (True, False)
            }
        assert ready == BACKLOG - 7, "the claims took 7 of the bulk: this backlog is just under the line now"
        for queues in (1, 2):  # each queue's rows: by walking its priority index, or by visibility
            order = [p for p in plans[queues, True] if "qtasks_queue_order" in p]
            assert len(order) == queues and not any("qtasks_queue_visible" in p for p in plans[queues, True])
            assert len([p for p in plans[queues, False] if "qtasks_queue_visible" in p]) == queues


async def test_ack_with_stores_the_record_and_acks_the_delivery_in_one_transaction(sqlite_url: str) -> None:
    """Delivery.ack_with, offered when the records are in the broker's file and connection: the
    save and the ack are one transaction, applied together, written or not; a lease taken over
    by another worker fences its ack out; a save that fails leaves its message leased."""
    path = sqlite_url.split(":///", 1)[1]
    await check_ack_with(sqlite_url)
    async with QueueTasks(broker=sqlite_url) as app:
        broker = app.broker
        message, delivery = await leased_one(app, "stored badly")
        with sqlite3.connect(path) as conn:  # the records table is gone: the save fails ...
            conn.execute("ALTER TABLE qtasks_records RENAME TO qtasks_records_aside")
        with pytest.raises(sqlite3.OperationalError):
            await delivery.ack_with(Record.from_message(message, Status.SUCCESS), 60)
        assert await broker.depth("default") == 1, "... and takes its ack with it: still leased"
        with sqlite3.connect(path) as conn:
            conn.execute("ALTER TABLE qtasks_records_aside RENAME TO qtasks_records")
        assert await delivery.ack_with(Record.from_message(message, Status.SUCCESS, returning=2), 60)
        assert await broker.depth("default") == 0


async def test_rows_that_wait_sort_after_every_ready_row_until_a_claim_finds_them_due(sqlite_url: str) -> None:
    """A delayed message, or one nacked with a delay, carries LATER on its row's priority, so a
    claim walking the priority index over a backlog never walks past it; the first claim that
    finds it due takes LATER off (through a partial index) and it runs in its own priority order,
    a negative one too. Priorities beyond +-WAITS are clamped: a row waits exactly when its priority
    is WAITS or more."""
    path = sqlite_url.split(":///", 1)[1]

    def priorities() -> dict[bytes, int]:
        with sqlite3.connect(path) as conn:
            return dict(conn.execute("SELECT body, priority FROM qtasks_queue"))

    async with QueueTasks(broker=sqlite_url, storage="memory") as app:
        broker = app.broker
        now = time.time()
        await broker.publish(Envelope("soon", "default", b"soon", -2, now + 0.3))
        await broker.publish(Envelope("past", "default", b"past eta", 3, now - 1))  # due already: no LATER
        await broker.publish(Envelope("ready", "default", b"ready", 5))
        assert priorities() == {b"soon": -2 + LATER, b"past eta": 3, b"ready": 5}
        [first] = await broker.fetch(["default"], 1, 30.0, 1.0)
        assert first.body == b"past eta"
        await first.nack(60.0)  # waits again, a minute
        [second] = await broker.fetch(["default"], 1, 30.0, 1.0)
        await second.nack()  # back at once: no LATER
        assert priorities() == {b"soon": -2 + LATER, b"past eta": 3 + LATER, b"ready": 5}
        await asyncio.sleep(0.35)
        found = await broker.fetch(["default"], 5, 30.0, 1.0)  # due now: its own priority first
        assert [d.body for d in found] == [b"soon", b"ready"]
        assert priorities() == {b"soon": -2, b"past eta": 3 + LATER, b"ready": 5}
        await broker.publish(Envelope("low", "default", b"low", -(1 << 60), now + 60))
        await broker.publish(Envelope("high", "default", b"high", 1 << 60))
        assert priorities()[b"low"] == 1 - WAITS + LATER >= WAITS > priorities()[b"high"] == WAITS - 1
        with sqlite3.connect(path) as conn:  # both the look and the update find them by the partial index
            for sql in (WAITING, DUE):
                plan = [
                    row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql.format('?')}", ("default", time.time()))
                ]
                assert any("qtasks_queue_waiting" in step for step in plan), plan


async def test_wake_ups_fall_back_to_polling_when_a_socket_path_would_be_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Unix socket path holds about 104 bytes; a deep temp dir (macOS's $TMPDIR is ~50
    characters) could push a wake-up socket past that. Binding then fails, and the backend polls
    instead of failing every fetch and wait."""
    import tempfile

    deep = tmp_path / ("t" * 90)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    url = f"sqlite:///{tmp_path / 'q.db'}"
    async with QueueTasks(broker=url, storage=url) as app:
        await app.broker.publish(Envelope("m1", "default", b"x"))
        assert [d.body for d in await app.broker.fetch(["default"], 1, 30.0, 1.0)] == [b"x"]
        await app.storage.save(Record(id="r1", name="t", status=Status.SUCCESS), 60)
        assert (await app.storage.wait("r1", 1.0)).status == Status.SUCCESS  # type: ignore[union-attr]


async def test_a_waiter_looks_again_each_second_so_a_wake_up_lost_to_a_full_socket_costs_a_second(
    tmp_path: Path,
) -> None:
    """A socket queues a few datagrams (net.unix.max_dgram_qlen, 10 by default) and a full one
    drops the rest: a waiter whose loop was busy while other processes finished many tasks may
    miss the datagram naming its own. It looks at its record again within a second anyway."""
    import threading

    url = f"sqlite:///{tmp_path / 'q.db'}"

    async def finish_many() -> None:  # another process, as far as wake-ups go
        async with QueueTasks(broker="memory", storage=url) as other:
            for task_id in [f"other-{i}" for i in range(15)] + ["mine"]:  # a datagram each
                await other.storage.save(Record(id=task_id, name="t", status=Status.SUCCESS), 60)
                await asyncio.sleep(0.01)

    async with QueueTasks(broker="memory", storage=url) as app:
        waiter = asyncio.ensure_future(app.storage.wait("mine", 20.0))
        await asyncio.sleep(0.3)  # listening, and waiting
        writer = threading.Thread(target=asyncio.run, args=(finish_many(),))
        writer.start()
        writer.join(15)  # meanwhile this loop is busy: its socket fills up
        freed = time.monotonic()
        record = await waiter
        assert record is not None and record.status == Status.SUCCESS
        assert time.monotonic() - freed < 1.5, "looked again within a second, not at the timeout"


async def test_one_write_that_raises_does_not_fail_the_others_of_its_group_commit(tmp_path: Path) -> None:
    """Writes of one loop turn share a transaction; one that raises (here an OverflowError, not a
    sqlite3 error) is retried alone and fails alone."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    async with QueueTasks(broker=url, storage="memory") as app:
        broker = app.broker
        bad = broker._db.write(lambda conn: conn.execute("SELECT ?", (2**70,)))
        results = await asyncio.gather(
            broker.publish(Envelope("a", "default", b"a")),
            bad,
            broker.publish(Envelope("b", "default", b"b")),
            return_exceptions=True,
        )
        assert isinstance(results[1], OverflowError) and results[0] is None and results[2] is None
        assert await broker.depth("default") == 2
        assert await broker.purge_dead(["99999999999999999999", "\u0661"]) == 0  # not ids: no write at all


async def test_a_file_locked_past_the_busy_timeout_is_an_outage_not_a_bad_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer holding the file (a backup, a long transaction) past the 30 s busy timeout
    is an outage: a TimeoutError, an OSError, which the worker retries as it does a lost server.
    It used to be the sqlite3 error, which the worker takes for a record that can never be
    stored (an error record and a dead letter for a task that had succeeded). The 30 s pass 20
    times faster here."""
    import types

    import qtasks.builtin.sqlite_db as sqlite_db

    real = time.monotonic
    monkeypatch.setattr(sqlite_db, "time", types.SimpleNamespace(monotonic=lambda: real() * 20, sleep=time.sleep))
    path = tmp_path / "q.db"
    async with QueueTasks(broker=f"sqlite:///{path}", storage="memory") as app:
        await app.broker.publish(Envelope("before", "default", b"x"))
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(TimeoutError, match="locked"):
                await app.broker.publish(Envelope("during", "default", b"x"))
        finally:
            holder.execute("COMMIT")
            holder.close()
        await app.broker.publish(Envelope("after", "default", b"x"))
        assert await app.broker.depth("default") == 2


async def test_a_fetch_cancelled_while_its_claim_runs_gives_the_rows_back_as_never_delivered(sqlite_url: str) -> None:
    async with QueueTasks(broker=sqlite_url) as app:
        await check_cancelled_fetches_hand_nothing_out(app)
