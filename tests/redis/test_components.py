"""The redis broker and storage in one process, against the real server: wiring, bad input,
wake-ups, reconnects. Worker processes are in test_processes.py; what every backend does alike
(connection errors, masked passwords) is in tests/backends."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from qtasks.asyncio import QueueTasks
from qtasks.messages import Message, Record, Status
from qtasks.protocols import Envelope
from qtasks.testing import running_worker
from qtasks_redis import RedisBroker, RedisStorage
from qtasks_redis.client import RedisUnavailable
from redis.exceptions import ResponseError

from tests.backends.kit import check_ack_with, check_cancelled_fetches_hand_nothing_out, check_fresh_marks
from tests.redis.conftest import with_prefix
from tests.servers import redis_server

pytestmark = pytest.mark.redis


def raw(url: str) -> aioredis.Redis:
    """A plain redis-py client on the test's server, to look at or poke the keys directly."""
    return aioredis.Redis.from_url(url.split("?")[0], protocol=2)


def prefix_of(url: str) -> str:
    return url.split("prefix=")[1]


def echo_app(url: str) -> QueueTasks:
    """An app on ``url`` with one task, ``echo(x) -> x``."""
    app = QueueTasks(broker=url)

    @app.task
    async def echo(x: int) -> int:
        return x

    return app


async def test_a_redis_url_selects_both_components_sharing_one_client(
    redis_app_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QTASKS_BROKER", redis_app_url)
    app = QueueTasks()
    async with app:
        assert isinstance(app.broker, RedisBroker) and isinstance(app.storage, RedisStorage)
        assert app.storage.client is app.broker.client
        assert "redis" in app.plugins.origins and app.plugins.origins["redis"].startswith("qtasks-redis")


async def test_unix_socket_url_works_end_to_end() -> None:
    with redis_server() as server:
        app = QueueTasks(broker=server.unix_url)

        @app.task
        async def double(x: int) -> int:
            return 2 * x

        async with app, running_worker(app):
            assert (await app.add_task("double", 21, timeout=10)).returning == 42


async def test_keys_of_the_wrong_type_are_repaired_not_fatal(redis_app_url: str) -> None:
    app = QueueTasks(broker=redis_app_url)

    @app.task
    async def note(x: int) -> int:
        return x

    prefix = prefix_of(redis_app_url)
    good = Message(name="note", args=[3])
    r = raw(redis_app_url)
    async with app:
        # someone LPUSHes onto the ready set, and SETs the message hash, by hand
        await r.lpush(f"{prefix}:q:default:ready", app.encode(good), b"garbage")
        await r.set(f"{prefix}:q:default:msgs", b"oops")
        async with running_worker(app):
            assert (await app.wait(good.id, 10)).returning == 3
            deadline = time.monotonic() + 10
            while not (dead := await app.dead_letters()):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert dead[0].body == b"garbage" and dead[0].reason.startswith("malformed message")
            assert await r.get(next(iter(await r.keys(f"{prefix}:q:default:msgs:corrupt:*")))) == b"oops"
            assert (await app.add_task("note", 4, timeout=10)).returning == 4
    await r.aclose()


async def test_keys_broken_while_a_worker_waits_are_repaired_and_nothing_is_lost(redis_app_url: str) -> None:
    """Only a fetcher's first claim checks key types; later claims find a broken key on first use,
    before they move anything, and the claim after that repairs the keys."""
    app = echo_app(redis_app_url)
    prefix = prefix_of(redis_app_url)
    r = raw(redis_app_url)
    async with app, running_worker(app):
        assert (await app.add_task("echo", 1, timeout=10)).returning == 1  # the worker has claimed
        for key in ("msgs", "later", "ready", "posted"):
            await r.set(f"{prefix}:q:default:{key}", b"oops")
            results = [await app.add_task("echo", i) for i in range(3)] if key != "posted" else []
            if key == "posted":  # the publish itself fails loudly; the claim repairs the list
                with pytest.raises(ResponseError, match="WRONGTYPE"):
                    await app.add_task("echo", 0)
                await r.rpush(f"{prefix}:q:default:wake", b"1")
                deadline = time.monotonic() + 10
                while await r.type(f"{prefix}:q:default:posted") != b"none":
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                results = [await app.add_task("echo", i) for i in range(3)]
            assert [(await app.wait(rec.id, 10)).returning for rec in results] == [0, 1, 2], key
            assert await r.keys(f"{prefix}:q:default:{key}:corrupt:*"), key
    await r.aclose()


async def test_prefixes_keep_apps_apart(redis_url: str) -> None:
    one, two = QueueTasks(broker=with_prefix(redis_url)), QueueTasks(broker=with_prefix(redis_url))
    async with one, two:
        await one.broker.publish(Envelope("a", "q", b"for one"))
        assert await one.broker.depth("q") == 1
        assert await two.broker.depth("q") == 0


async def test_hand_pushed_entries_run_or_are_dead_lettered_with_the_reason(redis_app_url: str) -> None:
    app = QueueTasks(broker=redis_app_url)
    ran: list[int] = []

    @app.task
    async def note(x: int) -> int:
        ran.append(x)
        return x

    prefix = prefix_of(redis_app_url)
    good = Message(name="note", args=[7])
    r = raw(redis_app_url)
    async with app, running_worker(app):
        await r.rpush(f"{prefix}:q:default:in", b"\x00 this is not a message", app.encode(good))
        await r.zadd(f"{prefix}:q:default:ready", {"00000000ffffffff": 0})  # an entry without a body
        await r.rpush(f"{prefix}:q:default:wake", b"1")
        assert (await app.wait(good.id, 10)).returning == 7
        deadline = time.monotonic() + 10
        while len(dead := await app.dead_letters()) < 2:
            assert time.monotonic() < deadline, f"dead letters: {dead}"
            await asyncio.sleep(0.05)
        reasons = sorted(d.reason for d in dead)
        assert reasons[0].startswith("malformed message: cannot decode")
        assert "has no message body" in reasons[1]
        assert {d.queue for d in dead} == {"default"}
        # the worker went on: a normal task still runs
        assert (await app.add_task("note", 8, timeout=10)).returning == 8
    assert ran == [7, 8]
    await r.aclose()


async def test_a_body_pushed_by_hand_alone_reaches_a_waiting_worker(redis_app_url: str) -> None:
    """A claim that finds nothing but the inbox (no ready, later or posted entry) still looks
    there: its quick look at a queue with only posted messages must not skip the inbox."""
    app = echo_app(redis_app_url)
    prefix = prefix_of(redis_app_url)
    r = raw(redis_app_url)
    async with app, running_worker(app):
        assert (await app.add_task("echo", 1, timeout=10)).returning == 1  # past the first claim
        message = Message(name="echo", args=[5])
        await r.rpush(f"{prefix}:q:default:in", app.encode(message))
        await r.rpush(f"{prefix}:q:default:wake", b"1")
        assert (await app.wait(message.id, 10)).returning == 5
    await r.aclose()


async def test_dead_letters_expire(redis_app_url: str) -> None:
    app = QueueTasks(broker=redis_app_url, dead_letter_ttl=0.3)
    async with app:
        await app.broker.publish(Envelope("x", "q", b"poison"))
        (delivery,) = await app.broker.fetch(["q"], 1, 5.0, 2.0)
        await delivery.dead_letter("bad")
        assert [d.reason for d in await app.dead_letters()] == ["bad"]
        await asyncio.sleep(0.6)
        assert await app.dead_letters() == []


async def test_a_blocked_fetch_is_woken_for_a_delayed_message_published_later(redis_app_url: str) -> None:
    app = QueueTasks(broker=redis_app_url)
    async with app:
        broker = app.broker
        waiting = asyncio.ensure_future(broker.fetch(["q"], 1, 5.0, 8.0))
        await asyncio.sleep(0.2)
        sent = time.monotonic()
        await broker.publish(Envelope("x", "q", b"soon", eta=time.time() + 0.5))
        (delivery,) = await waiting
        took = time.monotonic() - sent
        assert 0.4 <= took < 2.0, f"delivered after {took:.2f}s: not at its eta"
        await delivery.ack()


async def test_a_lapsed_lease_is_noticed_by_a_waiting_fetch_without_polling(redis_app_url: str) -> None:
    app = QueueTasks(broker=redis_app_url)
    async with app:
        broker = app.broker
        await broker.publish(Envelope("x", "q", b"job"))
        (crashed,) = await broker.fetch(["q"], 1, 0.6, 2.0)  # its holder never settles it
        start = time.monotonic()
        (again,) = await broker.fetch(["q"], 1, 30.0, 10.0)
        assert again.count == 2 and time.monotonic() - start < 2.0
        assert await crashed.extend(5) is False
        await again.ack()


async def test_the_claim_marks_fresh_only_first_deliveries_of_tasks_whose_record_is_not_final(
    redis_app_url: str,
) -> None:
    await check_fresh_marks(redis_app_url)


async def test_ack_with_stores_the_record_and_acks_the_delivery_in_one_script(redis_app_url: str) -> None:
    """Delivery.ack_with, offered when the storage is on the broker's client: save.lua stores
    the record and acks the message, written or not, fenced by the lease as a plain ack is."""
    await check_ack_with(redis_app_url)


async def test_a_cancelled_blocking_fetch_ends_at_once_and_loses_nothing(redis_app_url: str) -> None:
    app = QueueTasks(broker=redis_app_url)
    async with app:
        broker = app.broker
        waiting = asyncio.ensure_future(broker.fetch(["q"], 5, 60.0, 30.0))
        await asyncio.sleep(0.3)
        start = time.monotonic()
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert time.monotonic() - start < 1.0
        r = raw(redis_app_url)
        blocked = [c for c in await r.client_list() if c.get("cmd") == "blpop" and c.get("flags") == "b"]
        assert blocked == [], "the server still holds a blocked fetch"
        await r.aclose()
        await broker.publish(Envelope("x", "q", b"kept"))
        (delivery,) = await broker.fetch(["q"], 5, 60.0, 2.0)
        assert delivery.body == b"kept"
        await delivery.ack()


async def test_a_fetch_cancelled_while_its_claim_runs_gives_the_messages_back_as_never_delivered(
    redis_app_url: str,
) -> None:
    """As on every broker (kit.check_cancelled_fetches_hand_nothing_out); and a fetch cancelled
    while its blocking connection is being made has nothing to give back."""
    async with QueueTasks(broker=redis_app_url) as app:
        early = asyncio.ensure_future(app.broker.fetch(["default"], 5, 60.0, 2.0))
        await asyncio.sleep(0)
        early.cancel()  # while its connection is being made: nothing to give back
        with pytest.raises(asyncio.CancelledError):
            await early
        assert await app.broker.fetch(["default"], 5, 60.0, 0.05) == []  # connected now
        await check_cancelled_fetches_hand_nothing_out(app)


async def test_a_blocking_command_that_gets_no_reply_fails_as_an_outage(redis_app_url: str) -> None:
    """A blocking command is given its own timeout plus 10 s to answer (a peer that vanished
    without closing the socket); then it fails as an outage, naming the server."""
    async with QueueTasks(broker=redis_app_url) as app:
        client = app.broker.client

        async def nothing(_: list[Any]) -> None:
            raise AssertionError("not cancelled")

        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match="no reply from Redis at redis://"):  # -9.9 s: 0.1 s in all
            await client.blocking([("BLPOP", f"{prefix_of(redis_app_url)}:nothing", "0")], -9.9, nothing)
        assert 0.1 <= time.monotonic() - started < 5
        assert await app.broker.depth("default") == 0  # the shared connection is fine


async def test_commands_in_flight_are_resent_when_their_connection_dies(redis_app_url: str) -> None:
    app = QueueTasks(broker=redis_app_url)
    r = raw(redis_app_url)
    key = f"{prefix_of(redis_app_url)}:test:list"
    async with app:
        in_flight = app.broker.client.call("BLPOP", key, 5)  # held up on the server
        await asyncio.sleep(0.2)
        await r.client_kill_filter(_type="normal", skipme=True)
        await asyncio.sleep(0.2)
        await r.rpush(key, b"v")
        assert await asyncio.wait_for(in_flight, 3) == [key.encode(), b"v"]  # it was sent again
        await r.client_kill_filter(_type="normal", skipme=True)  # an idle connection dies
        await asyncio.sleep(0.1)
        assert await app.broker.depth("q") == 0  # and nobody notices
    await r.aclose()


async def test_a_waiter_is_woken_even_if_its_subscription_was_lost(redis_app_url: str) -> None:
    app = QueueTasks(broker=redis_app_url)
    r = raw(redis_app_url)
    async with app:
        storage = app.storage
        record = Record(id="w1", name="t", status=Status.RUNNING)
        await storage.save(record, 60)
        waiting = asyncio.ensure_future(storage.wait("w1", 10))
        await asyncio.sleep(0.3)
        await r.client_kill_filter(_type="pubsub")
        await asyncio.sleep(0.3)
        record.status, record.returning = Status.SUCCESS, 5
        await storage.save(record, 60)
        got = await asyncio.wait_for(waiting, 5)
        assert got is not None and got.returning == 5
    await r.aclose()


async def test_a_final_save_wakes_every_waiting_storage_and_clears_the_waiters(redis_app_url: str) -> None:
    apps = [QueueTasks(broker=redis_app_url) for _ in range(3)]
    r = raw(redis_app_url)
    async with apps[0], apps[1], apps[2]:
        record = Record(id="many", name="t", status=Status.RUNNING)
        await apps[0].storage.save(record, 60)
        waits = [asyncio.ensure_future(app.storage.wait("many", 10)) for app in apps[1:]]
        prefix = prefix_of(redis_app_url)
        for _ in range(100):  # both storages' channels joined the waiter set
            if await r.scard(f"{prefix}:w:many") == 2:
                break
            await asyncio.sleep(0.02)
        assert await r.scard(f"{prefix}:w:many") == 2
        record.status, record.returning = Status.SUCCESS, 7
        await apps[0].storage.save(record, 60)
        got = await asyncio.wait_for(asyncio.gather(*waits), 5)
        assert [g.returning for g in got] == [7, 7]
        assert await r.exists(f"{prefix}:w:many") == 0
    await r.aclose()


async def test_submitted_tasks_are_waited_for_without_a_round_trip(redis_app_url: str) -> None:
    app = echo_app(redis_app_url)
    r = raw(redis_app_url)
    prefix = prefix_of(redis_app_url)
    async with app, running_worker(app):
        await app.add_task("echo", 0, timeout=10)  # subscribes the storage's reply channel
        record = await app.add_task("echo", 1)
        # the submit itself put the storage's reply channel in the task's waiter set ...
        members = await r.smembers(f"{prefix}:w:{record.id}")
        final = await app.wait(record.id, 10)
        assert final.returning == 1
        assert members in ({app.storage._replies.channel.encode()}, set())  # set() if already done
        # ... and the final save removed it again
        assert await r.exists(f"{prefix}:w:{record.id}") == 0
    await r.aclose()


async def test_a_result_pushed_before_its_submitter_waits_is_kept_for_that_wait(redis_app_url: str) -> None:
    """A quick worker's result may reach the submitter before add_task starts its wait."""
    submitter, worker_side = QueueTasks(broker=redis_app_url), QueueTasks(broker=redis_app_url)
    r = raw(redis_app_url)
    async with submitter, worker_side:
        storage = submitter.storage
        assert await storage._replies.ready(5)
        # a result that reaches our channel for a task submitted elsewhere is not kept ...
        await r.sadd(f"{prefix_of(redis_app_url)}:w:elsewhere", storage._replies.channel)
        assert await worker_side.storage.save(Record(id="elsewhere", name="t", status=Status.SUCCESS), 60)
        # ... nor one too large to keep (its wait looks it up) ...
        large = await submitter.add_task("t", 0)
        big = Record(id=large.id, name="t", status=Status.SUCCESS, returning="x" * 70_000)
        assert await worker_side.storage.save(big, 60)
        # ... one of a task submitted here is (the pushes arrive in order)
        record = await submitter.add_task("t", 1)  # announced: its waiter set has our channel
        done = Record(id=record.id, name="t", status=Status.SUCCESS, returning=2)
        assert await worker_side.storage.save(done, 60)
        deadline = time.monotonic() + 5
        while record.id not in storage._finished:
            assert time.monotonic() < deadline, "the pushed record was not kept"
            await asyncio.sleep(0.01)
        assert "elsewhere" not in storage._finished and large.id not in storage._finished
        assert (await submitter.wait(large.id, 5)).returning == big.returning

        async def no_lookup(*args: object) -> None:
            raise AssertionError("the wait looked the record up")

        storage._register = storage.get = no_lookup  # type: ignore[method-assign,assignment]
        found = await submitter.wait(record.id, 5)
        assert found.status == Status.SUCCESS and found.returning == 2
    await r.aclose()


async def test_a_new_record_arriving_after_the_final_one_does_not_leave_its_waiter_hanging(
    redis_app_url: str,
) -> None:
    """The message is published before the ``new`` record: a quick worker may finish first."""
    app = QueueTasks(broker=redis_app_url)
    async with app:
        storage = app.storage
        assert await storage._replies.ready(5)
        done = Record(id="late", name="t", status=Status.SUCCESS, returning=7)
        assert await storage.save(done, 60)
        assert await storage.save(Record(id="late", name="t"), 60) is False  # refused: final already
        r = raw(redis_app_url)
        await r.delete(f"{prefix_of(redis_app_url)}:r:late")
        await r.aclose()
        start = time.monotonic()
        found = await storage.wait("late", 10)  # the refusal came with the final record: no lookup
        assert found is not None and found.returning == 7 and time.monotonic() - start < 1.0
        assert await storage.save(Record(id="late2", name="t", status=Status.SUCCESS, returning=9), 60)
        inserting = storage.save(Record(id="late2", name="t"), 60)
        waiting = asyncio.ensure_future(storage.wait("late2", 10))  # waits for a push, as announced
        assert await inserting is False
        found = await asyncio.wait_for(waiting, 2)  # woken by the reply that says no push will come
        assert found is not None and found.returning == 9
        running = Record(id="slow", name="t", status=Status.RUNNING)
        assert await storage.save(running, 60)
        assert await storage.save(Record(id="slow", name="t"), 60) is False  # not over `running`
        waiting = asyncio.ensure_future(storage.wait("slow", 10))
        await asyncio.sleep(0.1)
        assert await storage.save(Record(id="slow", name="t", status=Status.SUCCESS, returning=8), 60)
        found = await asyncio.wait_for(waiting, 5)  # pushed: the late `new` joined the waiters
        assert found is not None and found.returning == 8


async def test_records_and_messages_are_plain_redis_values(redis_app_url: str) -> None:
    app = QueueTasks(broker=redis_app_url)
    r = raw(redis_app_url)
    prefix = prefix_of(redis_app_url)
    async with app:
        await app.storage.save(Record(id="r1", name="t", status=Status.SUCCESS, returning=[1]), 30)
        status, _, data = (await r.get(f"{prefix}:r:r1")).partition(b"\n")
        assert status == b"success" and json.loads(data)["returning"] == [1]
        assert 0 < await r.pttl(f"{prefix}:r:r1") <= 30_000
        await app.broker.publish(Envelope("m1", "q", b"body", priority=3))
        (seq,) = await r.zrange(f"{prefix}:q:q:ready", 0, -1)
        assert await r.hget(f"{prefix}:q:q:msgs", seq) == b"body"
        assert await r.zscore(f"{prefix}:q:q:ready", seq) == 3
        await app.broker.publish(Envelope("m2", "q", b"plain"))  # priority 0, no eta: posted
        assert await r.lrange(f"{prefix}:q:q:posted", 0, -1) == [b"m2\nplain"]
        assert await app.broker.depth("q") == 2
    await r.aclose()


async def test_posted_messages_keep_their_order_and_never_overtake_a_priority(redis_app_url: str) -> None:
    """Priority 0 is posted and gets its seq at the claim; other priorities get theirs at once."""
    async with QueueTasks(broker=redis_app_url) as app:
        broker = app.broker
        await broker.publish(Envelope("low", "q", b"low", priority=1))
        for i in range(150):
            await broker.publish(Envelope(f"p{i}", "q", b"%d" % i))
        await broker.publish(Envelope("high", "q", b"high", priority=-1))
        assert await broker.depth("q") == 152
        first = await broker.fetch(["q"], 120, 30.0, 2.0)
        rest = await broker.fetch(["q"], 200, 30.0, 2.0)
        bodies = [d.body for d in first + rest]
        assert bodies == [b"high", *(b"%d" % i for i in range(150)), b"low"]
        assert await broker.depth("q") == 152  # leased, not settled
        await asyncio.gather(*(d.ack() for d in first + rest))
        assert await broker.depth("q") == 0
        # nothing of priority 0 or better ready: posted messages are leased straight from their list
        await broker.publish(Envelope("low2", "q", b"low2", priority=2))
        for name in ("a", "b", "c"):
            await broker.publish(Envelope(name, "q", name.encode()))
        found = await broker.fetch(["q"], 10, 30.0, 2.0)
        assert [d.body for d in found] == [b"a", b"b", b"c", b"low2"]
        assert [d.count for d in found] == [1, 1, 1, 1]
        await asyncio.gather(*(d.ack() for d in found))
        assert await broker.depth("q") == 0


async def test_a_message_whose_eta_passed_is_posted_in_order_and_an_odd_id_is_kept_whole(
    redis_app_url: str,
) -> None:
    """An eta that has passed is no delay: such a message of priority 0 is posted like the
    others, so it keeps its publish order among them (through the script it would get its seq
    before the messages posted earlier). A posted entry is ``<id>\\n<body>`` with the id
    escaped: an id holding a newline or a backslash keeps its body whole, and the claim reads
    that task's record (cancelled here: not fresh) under the id as it is."""
    odd = "third \\ \n line two"
    async with QueueTasks(broker=redis_app_url) as app:
        broker = app.broker
        await app.storage.save(Record(id=odd, name="t", status=Status.CANCELLED), 60)
        await broker.publish(Envelope("first", "q", b"first"))
        await broker.publish(Envelope("second", "q", b"second", 0, time.time() - 1))
        await broker.publish(Envelope(odd, "q", b"third"))
        found = [(await broker.fetch(["q"], 1, 30.0, 2.0))[0] for _ in range(3)]
        assert [(d.body, d.fresh) for d in found] == [(b"first", True), (b"second", True), (b"third", False)]
        await asyncio.gather(*(d.ack() for d in found))


async def test_a_claim_that_leaves_posted_messages_behind_leaves_a_wake_up_token(redis_app_url: str) -> None:
    """The baton: the next fetch does not sleep past messages a claim left behind, and a claim
    that took the last one leaves no token (a token is a wasted claim)."""
    prefix = prefix_of(redis_app_url)
    r = raw(redis_app_url)
    wake = f"{prefix}:q:q:wake"
    async with QueueTasks(broker=redis_app_url) as app:
        for name in ("a", "b", "c"):
            await app.broker.publish(Envelope(name, "q", name.encode()))
        await r.delete(wake)  # the publishes' token: what is left now is the claims' doing
        first = await app.broker.fetch(["q"], 2, 30.0, 0.0)
        assert [d.body for d in first] == [b"a", b"b"] and await r.llen(wake) == 1
        started = time.monotonic()
        second = await app.broker.fetch(["q"], 2, 30.0, 5.0)
        assert [d.body for d in second] == [b"c"] and time.monotonic() - started < 2.0
        assert await r.llen(wake) == 0
        await asyncio.gather(*(d.ack() for d in first + second))
    await r.aclose()


async def test_a_broken_posted_list_fails_the_publish_loudly_until_a_claim_repairs_it(redis_app_url: str) -> None:
    prefix = prefix_of(redis_app_url)
    r = raw(redis_app_url)
    async with QueueTasks(broker=redis_app_url) as app:
        await r.set(f"{prefix}:q:q:posted", b"not a list")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await app.broker.publish(Envelope("m", "q", b"lost?"))
        assert await app.broker.fetch(["q"], 5, 30.0, 0.0) == []  # the claim sets the key aside
        assert await r.get(next(iter(await r.keys(f"{prefix}:q:q:posted:corrupt:*")))) == b"not a list"
        await r.rpush(f"{prefix}:q:q:posted", b"no task id")  # pushed by hand: a body, no id
        await app.broker.publish(Envelope("m", "q", b"kept"))
        found = await app.broker.fetch(["q"], 5, 30.0, 2.0)
        # only the posted message names its task (whose record is not final): fresh
        assert [(d.body, d.fresh) for d in found] == [(b"no task id", False), (b"kept", True)]
    await r.aclose()
