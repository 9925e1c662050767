"""Dead letters: one topic for every queue, read whole when listed.

A dead letter is a record keyed by its id -- the coordinates of the record that died
(``<topic>:<partition>:<offset>``), so a worker that crashed after writing it and dead-letters
the same record again adds no second entry -- with the queue, the reason and the time in its
headers. ``purge_dead`` cannot delete records (no DeleteRecords on Tansu): it writes a
*tombstone* with the same key, and listings leave out every id with a tombstone. The topic is
created with ``retention.ms`` = the dead-letter TTL (where the cluster honours it) and listings
leave out expired entries anyway.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from qtasks.protocols import DeadLetter

from qtasks_kafka import headers as h
from qtasks_kafka.client import KafkaClient, read_to


class DeadLetterTopic:
    """The app's dead-letter topic; see the module docstring."""

    def __init__(self, client: KafkaClient, ttl: float) -> None:
        self.client, self.topic, self.ttl = client, client.target.dead_topic, ttl

    async def _partitions(self) -> list[Any]:
        config = {"retention.ms": str(int(self.ttl * 1000))}
        return await self.client.partitions(self.topic, config=config, count=1)

    async def add(self, queue: str, dead_id: str, body: bytes, reason: str) -> None:
        await self._partitions()
        headers = {h.QUEUE: queue, h.REASON: reason, h.DIED_AT: repr(time.time())}
        await self.client.send(self.topic, body, dead_id.encode(), headers)

    async def entries(self, limit: int | None = None) -> list[DeadLetter]:
        """The live dead letters, oldest first."""
        found: dict[str, DeadLetter] = {}
        buried: set[str] = set()
        oldest = time.time() - self.ttl
        for record in await self._read():
            dead_id = (record.key or b"").decode("utf-8", "replace")
            found_headers = h.decode(record.headers)
            if h.PURGED in found_headers:
                buried.add(dead_id)
                found.pop(dead_id, None)
                continue
            died_at = h.number(found_headers, h.DIED_AT) or record.timestamp / 1000
            if dead_id in found or dead_id in buried or died_at < oldest:
                continue
            queue, reason = found_headers.get(h.QUEUE, ""), found_headers.get(h.REASON, "")
            found[dead_id] = DeadLetter(dead_id, queue, record.value or b"", reason, died_at)
        live = list(found.values())
        return live if limit is None else live[:limit]

    async def purge(self, ids: Sequence[str] | None) -> int:
        live = {d.id for d in await self.entries()}
        chosen = live if ids is None else live.intersection(ids)
        for dead_id in sorted(chosen):
            await self.client.send(self.topic, b"", dead_id.encode(), {h.PURGED: "1"})
        return len(chosen)

    async def _read(self) -> list[Any]:
        """Every record of the topic, with a short-lived group-less consumer."""
        tps = await self._partitions()
        end = await self.client.end_offsets(tps)
        if not any(end.values()):
            return []
        reader = AIOKafkaConsumer(enable_auto_commit=False, **self.client.target.client_options())
        await reader.start()
        try:
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            return sorted(await read_to(reader, end), key=lambda r: r.offset)
        finally:
            await reader.stop()
