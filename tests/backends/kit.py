"""What the worker-process tests share across backends: the tasks module the workers import,
``Backend`` (a broker URL as the processes see it, with its settings and timeouts), and helpers
to start workers and read what ran where."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from qtasks.asyncio import QueueTasks
from qtasks.messages import Message, Record, Status
from qtasks.protocols import Envelope

from tests.conftest import qtasks_cli

TASKS = """
import asyncio, os, signal, time
from pathlib import Path
from qtasks.asyncio import QueueTasks

app = QueueTasks()  # QTASKS_BROKER (and for Kafka QTASKS_STORAGE=sqlite), else the SQLite default

def mark(tag):
    Path("runs").mkdir(exist_ok=True)
    (Path("runs") / f"{tag}.{os.getpid()}.{time.time_ns()}").touch()

@app.task
async def sleepy(seconds: float, tag: str) -> int:
    mark(tag)
    await asyncio.sleep(seconds)
    return os.getpid()

@app.task
async def quick(i: int) -> int:
    with open(f"runs/quick.{os.getpid()}", "a") as log:  # one line per execution
        log.write(f"{i}\\n")
    await asyncio.sleep(0.05)
    return os.getpid()

@app.task
async def poison() -> None:
    mark("poison")
    os.kill(os.getpid(), signal.SIGKILL)  # kills every worker that runs it
"""


def make_project(directory: Path) -> Path:
    """``directory`` with the tasks module and an empty ``runs`` dir; the workers run there."""
    (directory / "tasks_app.py").write_text(TASKS)
    (directory / "runs").mkdir()
    return directory


def runs(project: Path, tag: str) -> list[tuple[int, int]]:
    """(pid, start time ns) of every execution of the task tagged ``tag``, in start order."""
    found = [p.name.split(".") for p in (project / "runs").glob(f"{tag}.*")]
    return sorted(((int(pid), int(ns)) for _, pid, ns in found), key=lambda run: run[1])


async def eventually(condition: Callable[[], object], timeout: float, what: str = "condition") -> None:
    """Wait until ``condition()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        await asyncio.sleep(0.05)


def with_prefix(url: str) -> str:
    """``url`` with names (keys, tables, topics and groups) of one test's own."""
    return f"{url}{'&' if '?' in url else '?'}{urlencode({'prefix': 't' + uuid.uuid4().hex[:12]})}"


@dataclass(frozen=True)
class Backend:
    """A backend as the test and its worker processes see it. ``url`` None: the embedded SQLite
    default (a ``qtasks.db`` in the project dir). Kafka keeps no records: its results go to a
    SQLite file the processes share."""

    name: str
    url: str | None = None
    storage: str | None = None
    wait: float = 20.0  #: seconds a test waits for one result (or one worker's exit)
    patience: float = 20.0  #: seconds a test waits for a task to start running
    #: the worker options of the SIGKILL test (Kafka: the lease of a delivery is its partition)
    kill_options: tuple[str, ...] = ("--lease", "1")
    redelivered_within: float | None = None  #: seconds from a SIGKILL to the task's second start

    @property
    def env(self) -> dict[str, str]:
        """The worker processes' settings."""
        env = {"QTASKS_BROKER": self.url} if self.url else {}
        return {**env, "QTASKS_STORAGE": self.storage} if self.storage else env

    def app(self) -> QueueTasks:
        return QueueTasks(broker=self.url, storage=self.storage)

    async def settle(self, members: int) -> None:
        """Until ``members`` workers consume the default queue: Kafka's consumer group is stable
        (a rebalance after that would hand partitions over while tasks run); nothing elsewhere."""
        if self.name == "kafka":
            assert self.url is not None
            await wait_for_group(self.url, members)


#: the session fixture that starts each backend's server (or takes it from QTASKS_TEST_*)
FIXTURES = {"redis": "redis_url", "postgres": "postgres_dsn", "kafka": "kafka_url"}
#: each backend's settings beyond its URL
SETTINGS: dict[str, dict[str, Any]] = {
    "sqlite": {"redelivered_within": 4.0},
    "redis": {"redelivered_within": 3.0},
    "postgres": {"wait": 30.0},
    "kafka": {"storage": "sqlite", "wait": 60.0, "patience": 30.0, "kill_options": ("-c", "2")},
}
MARKS = {"redis": [pytest.mark.redis], "kafka": [pytest.mark.kafka]}


def on(*names: str) -> pytest.MarkDecorator:
    """Run the test once per backend named, its ``backend`` fixture set to that backend."""
    params = [pytest.param(name, marks=MARKS.get(name, []), id=name) for name in names]
    return pytest.mark.parametrize("backend_server", params, indirect=True)


def start_worker(spawn: Any, backend: Backend, *extra: str, name: str = "worker", wait: bool = True, **env: str) -> Any:
    argv = qtasks_cli("worker", "-A", "tasks_app:app", "--log-format", "json", *extra)
    proc = spawn(argv, env={**backend.env, **env}, name=name)
    if wait:
        proc.wait_for("worker.started")
    return proc


async def wait_for_group(url: str, members: int, queue: str = "default", timeout: float = 60.0) -> None:
    """Until the queue's consumer group is stable with ``members`` members (a rebalance after
    that would hand partitions over while tasks run, which the tests do not want to measure)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from qtasks_kafka.target import parse

    target = parse(url)
    admin = AIOKafkaAdminClient(bootstrap_servers=list(target.bootstrap))
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            (described,) = await admin.describe_consumer_groups([target.group_id(queue)])
            (group,) = described.groups
            if group[2] == "Stable" and len(group[5]) == members:
                return
            assert time.monotonic() < deadline, f"group not stable with {members} members: {group}"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def leased_one(app: QueueTasks, name: str, lease: float = 30.0) -> tuple[Message, Any]:
    """Submit a task and lease its message; the delivery, which must offer ``ack_with``."""
    message = Message(name=name, args=[1])
    await app.submit(message)
    [delivery] = await app.broker.fetch(["default"], 1, lease, 2.0)
    assert delivery.ack_with is not None
    return message, delivery


async def check_ack_with(broker: str) -> None:
    """What every broker's Delivery.ack_with does (offered when the records are where the broker
    keeps its messages): the record is stored and the message acked; a record that is final
    already is not overwritten, but its message is acked; a lease taken over by another worker
    fences the ack out. With the records elsewhere, no ack_with is offered."""
    async with QueueTasks(broker=broker) as app, QueueTasks(broker=broker) as other:
        await _acks_with(app, other, app.broker.depth)
    async with QueueTasks(broker=broker, storage="memory") as elsewhere:
        await elsewhere.submit(Message(name="stored elsewhere", args=[]))
        [delivery] = await elsewhere.broker.fetch(["default"], 1, 30.0, 2.0)
        assert delivery.ack_with is None  # the worker saves, then acks
        await delivery.ack()


async def _acks_with(app: QueueTasks, other: QueueTasks, depth: Callable[[str], Any]) -> None:
    message, delivery = await leased_one(app, "ok")
    assert await delivery.ack_with(Record.from_message(message, Status.SUCCESS, returning=1), 60)
    assert await depth("default") == 0
    assert (await app.get(message.id)).returning == 1  # type: ignore[union-attr]

    message, delivery = await leased_one(app, "cancelled meanwhile")  # the record is final already:
    assert await app.cancel(message.id)  # not written, but the message is acked
    assert not await delivery.ack_with(Record.from_message(message, Status.SUCCESS), 60)
    assert await depth("default") == 0
    assert (await app.get(message.id)).status == Status.CANCELLED  # type: ignore[union-attr]

    message, delivery = await leased_one(app, "taken over", lease=0.05)
    await asyncio.sleep(0.1)
    [again] = await other.broker.fetch(["default"], 1, 30.0, 2.0)  # the lease lapsed
    assert await delivery.ack_with(Record.from_message(message, Status.SUCCESS), 60)
    assert await depth("default") == 1  # still the other's
    await again.ack()
    assert await depth("default") == 0


async def check_fresh_marks(broker: str) -> None:
    """A broker that sees the task records as it hands a message out (redis with its storage on
    the same server, sqlite with the records in its file, postgres with the storage on its pool)
    marks fresh only the first delivery of a task whose record is not final, and none when the
    records are kept elsewhere."""
    app = QueueTasks(broker=broker)

    @app.task
    async def job(x: int) -> None: ...

    async with app:
        live = await job.add_task(1)
        gone = await job.add_task(2)
        assert await app.cancel(gone.id) is True
        by_id = {app.decode(d.body).id: d for d in await app.broker.fetch(["default"], 5, 0.5, 2.0)}
        assert (by_id[live.id].fresh, by_id[gone.id].fresh) == (True, False)
        await by_id[gone.id].ack()
        (again,) = await app.broker.fetch(["default"], 5, 30.0, 5.0)  # its lease lapsed
        assert (again.count, again.fresh) == (2, False), "a redelivery may have run: not fresh"
        await again.ack()
    async with QueueTasks(broker=broker, storage="memory") as elsewhere:  # records not on the broker's side
        await elsewhere.broker.publish(Envelope(str(uuid.uuid4()), "default", b"job"))
        (delivery,) = await elsewhere.broker.fetch(["default"], 1, 30.0, 2.0)
        assert delivery.fresh is False
        await delivery.ack()


async def check_cancelled_fetches_hand_nothing_out(app: QueueTasks, times: int = 3) -> None:
    """A fetch cancelled while its claim runs (a worker stopped meanwhile) gives what the claim
    leased back ready, with its delivery count lowered again: it was never handed out. So the
    next delivery is the first: count 1, and fresh (its record is not final), not a step
    towards max_deliveries."""
    await app.submit(Message(name="t", args=[]))
    for _ in range(times):
        fetch = asyncio.ensure_future(app.broker.fetch(["default"], 5, 60.0, 2.0))
        await asyncio.sleep(0)  # its claim is on its way
        fetch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetch
    (delivery,) = await app.broker.fetch(["default"], 5, 60.0, 2.0)
    assert (delivery.count, delivery.fresh) == (1, True)
    await delivery.ack()
