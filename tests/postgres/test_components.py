"""The postgres broker and storage in one process, against the real server: wiring, bad input,
group commit, wake-ups, reconnects. Worker processes, and what every backend does alike
(connection errors, masked passwords), are in tests/backends."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
from qtasks.asyncio import QueueTasks
from qtasks.errors import ConfigError
from qtasks.messages import Message, Record, Status
from qtasks.protocols import Envelope
from qtasks.testing import running_worker
from qtasks_postgres import PostgresBroker, PostgresStorage, writes
from qtasks_postgres.schema import VERSION
from qtasks_postgres.storage import stored_id
from qtasks_postgres.target import parse

from tests.backends.kit import check_ack_with, check_fresh_marks, leased_one
from tests.postgres.conftest import eventually, with_params, with_prefix


@asynccontextmanager
async def raw(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to the test's server, to look at or poke the tables directly."""
    conn = await asyncpg.connect(parse(url).dsn)  # without qtasks' own parameters
    try:
        yield conn
    finally:
        await conn.close()


def table(app: QueueTasks, what: str) -> str:
    """The qualified name of one of the app's tables (in the schema it settled on)."""
    return str(app.broker.db.names.table(what))


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_a_postgres_url_selects_both_components_sharing_one_pool(
    postgres_app_url: str, scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QTASKS_BROKER", scheme + postgres_app_url.removeprefix("postgresql"))
    app = QueueTasks()
    async with app:
        assert isinstance(app.broker, PostgresBroker) and isinstance(app.storage, PostgresStorage)
        assert app.storage.db is app.broker.db
        assert "postgres" in app.plugins.origins and app.plugins.origins["postgres"].startswith("qtasks-postgres")


async def test_the_schema_is_created_once_by_many_apps_starting_together(postgres_dsn: str) -> None:
    schema = f"s{time.monotonic_ns()}"
    url = with_params(postgres_dsn, schema=schema, prefix="jobs")
    apps = [QueueTasks(broker=url) for _ in range(6)]
    await asyncio.gather(*(app.start() for app in apps))
    try:
        await apps[0].broker.publish(Envelope("x", "q", b"one"))
        assert [await app.broker.depth("q") for app in apps] == [1] * 6
        async with raw(postgres_dsn) as conn:
            names = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1", schema)
        assert [r["tablename"] for r in names] == ["jobs_dead", "jobs_queue", "jobs_records"]
    finally:
        await asyncio.gather(*(app.stop() for app in apps))


async def test_prefixes_keep_apps_apart(postgres_dsn: str) -> None:
    one, two = QueueTasks(broker=with_prefix(postgres_dsn)), QueueTasks(broker=with_prefix(postgres_dsn))
    async with one, two:
        await one.broker.publish(Envelope("a", "q", b"for one"))
        await one.storage.save(Record(id="r1", name="t", status=Status.SUCCESS), 60)
        assert await one.broker.depth("q") == 1 and await one.get("r1") is not None
        assert await two.broker.depth("q") == 0 and await two.get("r1") is None
        assert await two.broker.fetch(["q"], 1, 5.0, 0.3) == []


@pytest.mark.parametrize("schema", ["user", "order", "select"])
async def test_a_schema_named_by_a_reserved_word_is_a_config_error_that_says_why(schema: str) -> None:
    """qtasks' statements name the schema unquoted, where PostgreSQL takes these for SQL."""
    app = QueueTasks(broker=f"postgresql://u:pa55@127.0.0.1/db?schema={schema}")
    with pytest.raises(ConfigError) as caught:
        await app.start()
    assert f"bad schema {schema!r}" in str(caught.value) and "reserved word" in str(caught.value)


async def test_a_schema_named_by_a_key_word_that_is_not_reserved_works(postgres_dsn: str) -> None:
    """``values`` is a key word that PostgreSQL still takes for a name (so is not refused)."""
    app = QueueTasks(broker=with_params(with_prefix(postgres_dsn), schema="values"))
    async with app:
        await app.broker.publish(Envelope("a", "q", b"x"))
        (delivery,) = await app.broker.fetch(["q"], 1, 30.0, 2.0)
        await delivery.ack()
        assert await app.storage.save(Record(id="r1", name="t", status=Status.SUCCESS), 60)
        assert await app.get("r1") is not None and await app.broker.depth("q") == 0


def test_a_pool_size_in_digits_of_another_script_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bad pool_size '\u00b2'"):  # SUPERSCRIPT TWO: str.isdigit(), not int()
        parse("postgresql://app@db.example/app?pool_size=%C2%B2")


async def test_records_and_messages_are_plain_rows(postgres_app_url: str) -> None:
    app = QueueTasks(broker=postgres_app_url)
    async with app, raw(postgres_app_url) as conn:
        await app.storage.save(Record(id="r1", name="t", status=Status.SUCCESS, returning=[1]), 30)
        row = await conn.fetchrow(
            f"SELECT status, data, expires_at - now() AS left FROM {table(app, 'records')} WHERE id = 'r1'"
        )
        assert row["status"] == "success" and json.loads(row["data"])["returning"] == [1]
        assert 0 < row["left"].total_seconds() <= 30
        await app.broker.publish(Envelope("m1", "q", b"body", priority=3))
        row = await conn.fetchrow(f"SELECT queue, priority, body, token FROM {table(app, 'queue')}")
        assert dict(row) == {"queue": "q", "priority": 3, "body": b"body", "token": None}


async def test_one_claim_leases_several_rows_under_one_token(postgres_app_url: str) -> None:
    app = QueueTasks(broker=postgres_app_url)
    async with app, raw(postgres_app_url) as conn:
        for i in range(7):
            await app.broker.publish(Envelope(f"m{i}", "q", b"%d" % i, priority=i % 2))
        batch = await app.broker.fetch(["q"], 5, 30.0, 2.0)
        assert [d.body for d in batch] == [b"0", b"2", b"4", b"6", b"1"]  # priority, then publish order
        rows = await conn.fetch(f"SELECT token FROM {table(app, 'queue')} WHERE token IS NOT NULL")
        assert len(rows) == 5 and len({r["token"] for r in rows}) == 1
        for d in batch:
            await d.ack()
        assert await app.broker.depth("q") == 2


async def test_the_writes_of_one_event_loop_turn_are_one_transaction(postgres_app_url: str) -> None:
    app = QueueTasks(broker=postgres_app_url)

    @app.task
    async def note(x: int) -> int:
        return x

    async with app, raw(postgres_app_url) as conn:
        records = await asyncio.gather(*(app.add_task("note", i) for i in range(30)))
        queue = await conn.fetch(f"SELECT xmin::text FROM {table(app, 'queue')}")
        saved = await conn.fetch(f"SELECT xmin::text FROM {table(app, 'records')}")
        assert len(queue) == len(saved) == 30
        assert len({r["xmin"] for r in queue + saved}) == 1, "30 submits, one transaction"
        batch = await app.broker.fetch(["default"], 30, 30.0, 2.0)
        assert len(batch) == 30
        await asyncio.gather(*(d.ack() for d in batch[:20]), *(d.extend(60) for d in batch[20:]))
        left = await conn.fetch(f"SELECT xmin::text FROM {table(app, 'queue')}")
        assert len(left) == 10 and len({r["xmin"] for r in left}) == 1, "20 acks and 10 renewals, one transaction"
        stored = await conn.fetch(f"SELECT id FROM {table(app, 'records')}")
        assert {r.id for r in records} == {r["id"] for r in stored}


async def test_a_record_saved_twice_in_one_turn_keeps_the_order(postgres_app_url: str) -> None:
    app = QueueTasks(broker=postgres_app_url)
    async with app:
        record = Record(id="twice", name="t", status=Status.NEW)
        running = Record(id="twice", name="t", status=Status.RUNNING)
        done = Record(id="twice", name="t", status=Status.SUCCESS, returning=1)
        late = Record(id="twice", name="t", status=Status.RUNNING)
        saves = [app.storage.save(r, 60) for r in (record, running, done, late)]
        assert await asyncio.gather(*saves) == [True, True, True, False]
        stored = await app.get("twice")
        assert stored is not None and (stored.status, stored.returning) == (Status.SUCCESS, 1)


async def test_one_bad_write_fails_alone_and_loses_nothing(postgres_app_url: str) -> None:
    app = QueueTasks(broker=postgres_app_url)
    async with app:
        broker = app.broker
        results = await asyncio.gather(
            broker.publish(Envelope("a", "q", b"good")),
            broker.publish(Envelope("b", "q\x00nul", b"bad queue name")),
            broker.publish(Envelope("c", "q", b"bad priority", priority=2**40)),
            app.storage.save(Record(id="kept", name="t", status=Status.NEW), 60),
            broker.publish(Envelope("d", "q", b"good too")),
            return_exceptions=True,
        )
        assert results[0] is None and results[4] is None and results[3] is True
        assert isinstance(results[1], asyncpg.PostgresError) and "0x00" in str(results[1])
        assert isinstance(results[2], ValueError) and "priority" in str(results[2])
        assert await broker.depth("q") == 2 and await app.get("kept") is not None


async def test_a_queue_name_over_1000_bytes_fails_its_publish_before_anything_is_written(
    postgres_app_url: str,
) -> None:
    """Longer names would not fit the queue's indexes (about 2,700 bytes an entry): the server
    would refuse the insert with an internal btree error instead."""
    app = QueueTasks(broker=postgres_app_url)
    async with app:
        longest = "\u00e9" * 500  # 1000 bytes of UTF-8
        for name in [longest + "x", os.urandom(2000).hex()]:  # the second, incompressible, broke the index
            with pytest.raises(ValueError, match="at most 1000 bytes"):
                await app.broker.publish(Envelope("a", name, b"x"))
            assert await app.broker.depth(name) == 0
        await app.broker.publish(Envelope("a", longest, b"x"))
        (delivery,) = await app.broker.fetch([longest], 1, 30.0, 2.0)
        assert delivery.body == b"x"


async def test_a_task_id_that_text_cannot_hold_is_submitted_and_its_message_row_names_its_record(
    postgres_app_url: str,
) -> None:
    """The message row keeps the id its record is stored under (``stored_id``), which text can
    hold and which the claim compares with the records to tell a fresh delivery."""
    app = QueueTasks(broker=postgres_app_url)
    async with app, raw(postgres_app_url) as conn:
        for task_id, final in [("nul\x00id", False), ("nul\x00done", True)]:
            record = await app.submit(Message(id=task_id, name="t", args=[]))
            assert record.id == task_id
            stored = await conn.fetchval(f"SELECT task_id FROM {table(app, 'queue')} ORDER BY seq DESC LIMIT 1")
            assert stored == stored_id(task_id) != task_id
            if final:
                await app.storage.save(Record.from_message(Message(id=task_id, name="t"), Status.SUCCESS), 60)
            (delivery,) = await app.broker.fetch(["default"], 1, 30.0, 2.0)
            assert delivery.fresh is not final
            await delivery.ack()


async def test_hand_inserted_rows_run_or_are_dead_lettered_with_the_reason(postgres_app_url: str) -> None:
    app = QueueTasks(broker=postgres_app_url)
    ran: list[int] = []

    @app.task
    async def note(x: int) -> int:
        ran.append(x)
        return x

    good = Message(name="note", args=[7])
    async with app, running_worker(app), raw(postgres_app_url) as conn:
        await app.add_task("note", 6, timeout=10)  # the worker is now waiting for the next message
        insert = f"INSERT INTO {table(app, 'queue')} (queue, body) VALUES ('default', $1)"
        await conn.execute(insert, b"\x00 this is not a message")  # the insert trigger wakes the worker
        await conn.execute(insert, app.encode(good))
        assert (await app.wait(good.id, 10)).returning == 7
        deadline = time.monotonic() + 10
        while not (dead := await app.dead_letters()):
            assert time.monotonic() < deadline, "the bad row was not dead-lettered"
            await asyncio.sleep(0.05)
        assert [d.body for d in dead] == [b"\x00 this is not a message"]
        assert dead[0].reason.startswith("malformed message: cannot decode") and dead[0].queue == "default"
        assert (await app.add_task("note", 8, timeout=10)).returning == 8  # the worker went on
    assert ran == [6, 7, 8]


async def test_purge_dead_takes_only_ascii_digits_for_ids(postgres_app_url: str) -> None:
    """int() reads the digits of every script (and str.isdigit() takes '²', which int() refuses):
    an id in other digits is not ours, and deletes nothing."""
    app = QueueTasks(broker=postgres_app_url)
    async with app:
        await app.broker.publish(Envelope("x", "q", b"poison"))
        (delivery,) = await app.broker.fetch(["q"], 1, 30.0, 2.0)
        await delivery.dead_letter("bad")
        (dead,) = await app.dead_letters()
        arabic = "".join(chr(ord("\u0660") + int(digit)) for digit in dead.id)  # ARABIC-INDIC DIGITs
        assert await app.broker.purge_dead([arabic]) == 0
        assert await app.broker.purge_dead(["\u00b2"]) == 0
        assert await app.broker.purge_dead([dead.id]) == 1


async def test_dead_letters_and_records_expire_and_are_swept(postgres_app_url: str) -> None:
    app = QueueTasks(broker=postgres_app_url, dead_letter_ttl=0.3)
    async with app, raw(postgres_app_url) as conn:
        await app.broker.publish(Envelope("x", "q", b"poison"))
        (delivery,) = await app.broker.fetch(["q"], 1, 5.0, 2.0)
        await delivery.dead_letter("bad")
        await app.storage.save(Record(id="short", name="t", status=Status.SUCCESS), 0.3)
        assert [d.reason for d in await app.dead_letters()] == ["bad"]
        await asyncio.sleep(0.6)
        assert await app.dead_letters() == [] and await app.get("short") is None
        dead, records = table(app, "dead"), table(app, "records")
        count = f"SELECT (SELECT count(*) FROM {dead}) + (SELECT count(*) FROM {records})"
        assert await conn.fetchval(count) == 2  # expired, not yet swept
        app.broker.db._swept = -1e9  # the next write sweeps (once a minute otherwise)
        await app.storage.save(Record(id="long", name="t", status=Status.NEW), 60)
        deadline = time.monotonic() + 10
        while await conn.fetchval(count) != 1:
            assert time.monotonic() < deadline, "expired rows were not swept"
            await asyncio.sleep(0.05)


async def test_the_sweep_spares_a_record_saved_anew_while_it_waited_for_the_row(postgres_app_url: str) -> None:
    """A save may overwrite an expired record; if the sweep chose that record and then waited for
    the saving transaction's row lock, it must see the new row, live again, and leave it."""
    app = QueueTasks(broker=postgres_app_url)
    async with app, raw(postgres_app_url) as conn:
        db = app.broker.db
        await app.storage.save(Record(id="r1", name="t", status=Status.RUNNING), 0.01)
        await asyncio.sleep(0.1)
        assert await app.get("r1") is None  # expired, not yet swept
        done = app.serializer.dumps(Record(id="r1", name="t", status=Status.SUCCESS).to_dict())
        async with conn.transaction():  # the statement a save runs, not yet committed
            row = await conn.fetchrow(db.sql.apply, *writes.arguments([writes.Save("r1", "success", done, 3600.0)]))
            assert row is not None and row["saved"] == ["r1"]
            sweep = asyncio.ensure_future(db.fetchval(db.sql.sweep))
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'WITH gone%'"
            deadline = time.monotonic() + 20
            while not await db.fetchval(waiting):
                assert time.monotonic() < deadline, "the sweep never waited for the row"
                await asyncio.sleep(0.05)
        assert await sweep == 0
        assert await app.get("r1") is not None


async def test_a_waiting_fetch_is_woken_for_a_delayed_message_and_not_before(postgres_app_url: str) -> None:
    app = QueueTasks(broker=postgres_app_url)
    async with app:
        broker = app.broker
        waiting = asyncio.ensure_future(broker.fetch(["q"], 1, 5.0, 30.0))
        await asyncio.sleep(0.2)
        eta = time.time() + 0.5
        await broker.publish(Envelope("x", "q", b"soon", eta=eta))
        (delivery,) = await waiting
        assert time.time() >= eta - 0.01, "delivered before its eta"
        assert time.time() < eta + 15, "a waiting fetch must wake at the eta, not at the end of its wait"
        await delivery.ack()


async def test_a_lapsed_lease_is_noticed_by_a_waiting_fetch(postgres_app_url: str) -> None:
    app = QueueTasks(broker=postgres_app_url)
    async with app:
        broker = app.broker
        await broker.publish(Envelope("x", "q", b"job"))
        (crashed,) = await broker.fetch(["q"], 1, 0.6, 2.0)  # its holder never settles it
        start = time.monotonic()
        (again,) = await broker.fetch(["q"], 1, 30.0, 30.0)
        assert again.count == 2 and time.monotonic() - start < 15, "woken at the lease's deadline"
        assert await crashed.extend(5) is False
        await crashed.nack(0.0, b"stale")  # fenced: changes nothing
        await crashed.dead_letter("stale")
        await again.ack()
        assert await broker.depth("q") == 0 and await app.dead_letters() == []


async def test_a_lapsed_holder_renewing_in_the_same_turn_as_the_new_holder_is_fenced_out(
    postgres_app_url: str,
) -> None:
    """A worker's heartbeat renews all its leases at once, and another's may share its event-loop
    turn (in-process workers): both renewals go out in one batch, yet only the holder of the
    row's current token may be told its lease was renewed."""
    app = QueueTasks(broker=postgres_app_url)
    async with app:
        broker = app.broker
        await broker.publish(Envelope("x", "q", b"job"))
        (old,) = await broker.fetch(["q"], 1, 0.3, 2.0)
        await asyncio.sleep(0.6)  # its lease lapses
        (new,) = await broker.fetch(["q"], 1, 30.0, 2.0)
        assert new.count == 2
        old_renewed, new_renewed = await asyncio.gather(old.extend(30.0), new.extend(30.0))
        assert (old_renewed, new_renewed) == (False, True)
        new_renewed, old_renewed = await asyncio.gather(new.extend(30.0), old.extend(30.0))
        assert (old_renewed, new_renewed) == (False, True)


async def test_a_cancelled_fetch_gives_its_rows_back_as_never_delivered(postgres_app_url: str) -> None:
    """A fetch cancelled while its claim runs hands nothing out: the rows it leased are ready again
    at once, and their next delivery is the first (count 1, so ``fresh`` if the task has not run)."""
    app = QueueTasks(broker=postgres_app_url)
    async with app, raw(postgres_app_url) as conn:
        await app.submit(Message(name="t", args=[]))
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table(app, 'queue')} IN EXCLUSIVE MODE")  # the claim waits
            fetch = asyncio.ensure_future(app.broker.fetch(["default"], 1, 30.0, 10.0))
            await asyncio.sleep(0.3)
            fetch.cancel()
            await asyncio.sleep(0.05)
        with pytest.raises(asyncio.CancelledError):
            await fetch
        (delivery,) = await app.broker.fetch(["default"], 1, 30.0, 5.0)
        assert (delivery.count, delivery.fresh) == (1, True)


async def test_statements_are_run_again_when_their_connections_are_killed(postgres_app_url: str) -> None:
    name = f"victim{time.monotonic_ns()}"  # libpq parameters in the URL reach the server
    app = QueueTasks(broker=with_params(postgres_app_url, application_name=name))
    async with app, raw(postgres_app_url) as conn:
        storage = app.storage
        await storage.save(Record(id="w1", name="t", status=Status.RUNNING), 60)
        waiting = asyncio.ensure_future(storage.wait("w1", 20))
        await eventually(lambda: "w1" in storage._waiters, what="the waiter registered")
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", name
        )
        assert killed >= 2  # the pool's connection and the listener's
        assert await app.broker.depth("q") == 0  # run again on a new connection
        await storage.save(Record(id="w1", name="t", status=Status.SUCCESS, returning=5), 60)
        got = await asyncio.wait_for(waiting, 15)  # woken although its listener was killed
        assert got is not None and got.returning == 5


async def test_tasks_run_end_to_end_in_a_schema_of_their_own(postgres_dsn: str) -> None:
    app = QueueTasks(broker=with_params(postgres_dsn, schema=f"qt_{time.monotonic_ns()}"))

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with app, running_worker(app):
        assert (await app.add_task("add", 2, 3, timeout=10)).returning == 5
        delayed = await app.add_task("add", 1, 1, delay=0.3)
        assert (await app.wait(delayed.id, 10)).returning == 2
        assert app.broker.db.names.schema.startswith("qt_")


async def test_ids_and_reasons_that_postgres_text_cannot_hold_lose_nothing(postgres_app_url: str) -> None:
    app = QueueTasks(broker=postgres_app_url)

    @app.task(retry=0)
    async def note(x: int) -> int:
        if x < 0:
            raise ValueError("bad\x00value")
        return x

    odd = ["nul\x00id", "~qtasks-hex:6e756c006964"]  # the second looks like the first, escaped
    async with app, running_worker(app), raw(postgres_app_url) as conn:
        insert = f"INSERT INTO {table(app, 'queue')} (queue, body) VALUES ('default', $1)"
        for i, task_id in enumerate(odd):  # hand-made messages: JSON can carry a NUL
            await conn.execute(
                insert, json.dumps({"v": 1, "id": task_id, "name": "note", "args": [i], "kwargs": {}}).encode()
            )
        for i, task_id in enumerate(odd):
            assert (await app.wait(task_id, 10)).returning == i
        assert await app.get("nul") is None
        failed = await app.add_task("note", -1)
        final = await app.wait(failed.id, 10)
        assert final.status == "error" and "bad\x00value" in final.traceback
        deadline = time.monotonic() + 10
        while not (dead := await app.dead_letters()):
            assert time.monotonic() < deadline, "the failed task was not dead-lettered"
            await asyncio.sleep(0.05)
        assert dead[0].reason == "ValueError: bad\\x00value"
        assert await app.storage.delete("nul\x00id") is True and await app.get("nul\x00id") is None


async def test_a_waiter_of_another_app_is_woken_for_an_id_with_a_newline(postgres_app_url: str) -> None:
    """The ids of a notification are one per line: an id with a newline goes as '', which wakes
    every waiter (each reads its record again), instead of waking none."""
    async with QueueTasks(broker=postgres_app_url) as waiter, QueueTasks(broker=postgres_app_url) as saver:
        storage = waiter.storage
        for task_id in ["plain", "line1\nline2", "line1"]:
            waiting = asyncio.ensure_future(storage.wait(task_id, 30))
            await eventually(lambda: task_id in storage._waiters, what="the waiter registered")  # noqa: B023
            assert storage.db.listener.live(storage.db.names.done_channel)
            started = time.monotonic()
            assert await saver.storage.save(Record(id=task_id, name="t", status=Status.SUCCESS), 60)
            got = await waiting  # found at the end of its wait if never woken
            assert got is not None and got.id == task_id
            assert time.monotonic() - started < 15, f"{task_id!r}: not woken by the save"


async def test_a_database_of_schema_2_gets_the_apply_function_of_this_version(postgres_app_url: str) -> None:
    """Schema 3 changed only the body of the apply function (ids with a newline are notified as
    ''): the first process of this version replaces the function of schema 2 in place."""
    app = QueueTasks(broker=postgres_app_url)
    body = "strpos(f.id, E'\\n') = 0"
    async with app, raw(postgres_app_url) as conn:  # taken back to schema 2: its body and version
        apply = table(app, "apply2")
        old = (await conn.fetchval("SELECT pg_get_functiondef($1::regproc)", apply)).replace(f"AND {body} ", "")
        assert body not in old
        await conn.execute(old)
        await conn.execute(f"COMMENT ON FUNCTION {apply} IS 'qtasks-postgres schema 2'")
    async with app, raw(postgres_app_url) as conn:
        assert await conn.fetchval("SELECT obj_description($1::regproc, 'pg_proc')", apply) == VERSION
        assert body in await conn.fetchval("SELECT pg_get_functiondef($1::regproc)", apply)


async def test_the_claim_marks_fresh_only_first_deliveries_of_tasks_whose_record_is_not_final(
    postgres_app_url: str,
) -> None:
    await check_fresh_marks(postgres_app_url)


async def test_ack_with_stores_the_record_and_acks_the_delivery_in_one_write(postgres_app_url: str) -> None:
    """Delivery.ack_with, offered when the storage shares the broker's database: the save and
    the ack are one write (Settle), applied together, written or not; a lease taken over by
    another worker fences its ack out; and a batch sent again write by write keeps the two
    together, so a save that fails leaves its message leased, not acked."""
    await check_ack_with(postgres_app_url)
    app = QueueTasks(broker=postgres_app_url)
    async with app, raw(postgres_app_url) as conn:
        broker = app.broker
        queue = table(app, "queue")
        message, delivery = await leased_one(app, "stored badly")  # a batch with a bad write goes again
        done = Record.from_message(message, Status.SUCCESS, returning=1)  # write by write: this
        results = await asyncio.gather(  # save fails there (its TTL is out of range), and takes
            broker.publish(Envelope("x", "q\x00nul", b"bad queue name")),  # its ack with it
            delivery.ack_with(done, 1e300),
            return_exceptions=True,
        )
        assert all(isinstance(r, asyncpg.PostgresError) for r in results), results
        assert await conn.fetchval(f"SELECT count(*) FROM {queue}") == 1, "the message is still leased"
        assert await delivery.ack_with(Record.from_message(message, Status.SUCCESS, returning=2), 60)
        assert await conn.fetchval(f"SELECT count(*) FROM {queue}") == 0


async def test_a_database_of_schema_1_is_brought_up_to_date_and_its_queued_messages_run(postgres_app_url: str) -> None:
    app = QueueTasks(broker=postgres_app_url)

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    queued = Message(name="double", args=[21])
    # schema 2, then taken back to what schema 1 left: no task_id column, no apply2
    async with app, raw(postgres_app_url) as conn:
        await conn.execute(f"DROP FUNCTION {table(app, 'apply2')}")
        await conn.execute(f"ALTER TABLE {table(app, 'queue')} DROP COLUMN task_id")
        body = json.dumps(queued.to_wire()).encode()
        await conn.execute(f"INSERT INTO {table(app, 'queue')} (queue, body) VALUES ('default', $1)", body)
    async with app:
        async with raw(postgres_app_url) as conn:
            columns = await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema || '.' || table_name = $1",
                table(app, "queue"),
            )
        assert "task_id" in {c["column_name"] for c in columns}
        async with running_worker(app):
            old = await app.wait(queued.id, 10)  # no task id on its row: run after `running` is stored
            new = await double.add_task(4, timeout=10)
        assert (old.status, old.returning, new.status, new.returning) == ("success", 42, "success", 8)
