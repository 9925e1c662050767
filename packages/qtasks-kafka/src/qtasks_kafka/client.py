"""One app's connections to the cluster: a producer, an admin client and a group-less reader.

The producer writes with ``acks="all"`` (a publish returns once every in-sync replica has the
message) and without idempotence (Tansu has no InitProducerId; a retried send can at worst
duplicate a message, which at-least-once delivery allows). The admin client creates topics on
demand and reads the groups' committed offsets; the reader answers end-offset questions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.errors import KafkaConnectionError, KafkaError  # type: ignore[import-untyped]
from qtasks.errors import QtasksError

from qtasks_kafka.target import Target

#: A cluster that refuses connections at start-up is tried again this long (it may be starting
#: along with the worker).
STARTUP_WAIT = 3.0
#: CreateTopics error codes that mean "it is there".
TOPIC_EXISTS = (0, 36)


class KafkaUnavailable(QtasksError, ConnectionError):
    """The cluster cannot be reached (or refused us); the message names the URL, password masked."""


class KafkaClient:
    """The producer, admin client and reader of one app, and the topics known to exist."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.producer: Any = None
        self.admin: Any = None
        self.reader: Any = None
        #: topic -> its partitions, for the topics this process created or found
        self._topics: dict[str, list[TopicPartition]] = {}
        self._creating: dict[str, asyncio.Future[list[TopicPartition]]] = {}
        self.replication = 1

    async def start(self) -> None:
        """Connect all three clients, or raise ``KafkaUnavailable`` naming the URL."""
        options = self.target.client_options()
        self.producer = AIOKafkaProducer(acks="all", enable_idempotence=False, linger_ms=0, **options)
        self.admin = AIOKafkaAdminClient(**options)
        self.reader = AIOKafkaConsumer(enable_auto_commit=False, **options)
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + STARTUP_WAIT, 0.1
        while True:
            try:
                await self.producer.start()
                await self.admin.start()
                await self.reader.start()
                brokers = len((await self.admin.describe_cluster())["brokers"])
                break
            except (KafkaError, OSError) as exc:
                await self.stop()
                self.producer = AIOKafkaProducer(acks="all", enable_idempotence=False, linger_ms=0, **options)
                self.admin = AIOKafkaAdminClient(**options)
                self.reader = AIOKafkaConsumer(enable_auto_commit=False, **options)
                if not isinstance(exc, KafkaConnectionError | OSError) or loop.time() + pause > deadline:
                    self.producer = self.admin = self.reader = None
                    shown = self.target.shown
                    raise KafkaUnavailable(f"cannot connect to Kafka at {shown}: {_describe(exc)}") from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
        self.replication = self.target.numbers["replication"] or max(1, min(3, brokers))

    async def stop(self) -> None:
        for client, close in ((self.reader, "stop"), (self.producer, "stop"), (self.admin, "close")):
            if client is not None:
                try:
                    await getattr(client, close)()
                except Exception:  # closing a client that never connected
                    pass

    async def partitions(self, topic: str, config: dict[str, str] | None = None, count: int | None = None) -> list[Any]:
        """The partitions of ``topic``, creating it first if it does not exist (once per process;
        concurrent callers share the request; an existing topic is left as it is)."""
        known = self._topics.get(topic)
        if known is not None:
            return known
        pending = self._creating.get(topic)
        if pending is None:
            pending = self._creating[topic] = asyncio.ensure_future(self._create(topic, config or {}, count))
            pending.add_done_callback(lambda _: self._creating.pop(topic, None))
        found = await asyncio.shield(pending)
        self._topics[topic] = found
        return found

    async def existing(self, topic: str) -> list[Any]:
        """The partitions of ``topic``, or none if it does not exist (never creates it)."""
        if topic in self._topics:
            return self._topics[topic]
        (described,) = await self.admin.describe_topics([topic])
        if described["error_code"] or not described["partitions"]:
            return []
        return await self.partitions(topic)

    async def _create(self, topic: str, config: dict[str, str], count: int | None) -> list[TopicPartition]:
        wanted = NewTopic(topic, count or self.target.numbers["partitions"], self.replication, topic_configs=config)
        answer = await self.admin.create_topics([wanted])
        errors = [code for _, code, *_ in answer.topic_errors if code not in TOPIC_EXISTS]
        if errors:
            raise KafkaError(f"cannot create topic {topic!r} on {self.target.shown}: error code {errors[0]}")
        for _ in range(50):  # a new topic's metadata can take a moment to show its partitions
            (described,) = await self.admin.describe_topics([topic])
            found = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
            if found and not described["error_code"]:
                return sorted(found, key=lambda tp: tp.partition)
            await asyncio.sleep(0.05)
        raise KafkaError(f"topic {topic!r} on {self.target.shown} has no partitions")

    async def end_offsets(self, partitions: Iterable[Any]) -> dict[Any, int]:
        wanted = list(partitions)
        return dict(await self.reader.end_offsets(wanted)) if wanted else {}

    async def committed(self, group: str, partitions: Iterable[Any]) -> dict[Any, int]:
        """The group's committed offsets (-1 where it has none)."""
        wanted = list(partitions)
        if not wanted:
            return {}
        found = await self.admin.list_consumer_group_offsets(group, partitions=wanted)
        return {tp: (found[tp].offset if tp in found else -1) for tp in wanted}

    async def send(self, topic: str, value: bytes, key: bytes | None, headers: dict[str, str]) -> Any:
        """Write one record and wait until the cluster has it (acks=all)."""
        encoded = [(k, v.encode()) for k, v in headers.items()]
        return await self.producer.send_and_wait(topic, value, key=key, headers=encoded)

    def consumer(self, group: str, listener_options: dict[str, Any]) -> Any:
        """A new group consumer (not started) with qtasks' settings."""
        return AIOKafkaConsumer(
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.target.consumer_options(),
            **self.target.client_options(),
            **listener_options,
        )


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}"


async def read_to(reader: Any, end: dict[Any, int]) -> list[Any]:
    """Every record from ``reader``'s positions up to the ``end`` offsets of its partitions."""
    records: list[Any] = []
    while True:
        behind = [tp for tp, offset in end.items() if await reader.position(tp) < offset]
        if not behind:
            return records
        for batch in (await reader.getmany(*behind, timeout_ms=500)).values():
            records.extend(batch)
