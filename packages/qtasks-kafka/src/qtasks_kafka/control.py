"""The control log: purge marks and hand-out counts, shared by every process of an app.

One single-partition topic (``<prefix>-control``) that every process reads whole at start and
then follows (another process's write is seen within one poll). Two kinds of record:

* **purge marks** (key ``purge:<topic>``): ``purge(queue)`` cannot delete records (Tansu has no
  DeleteRecords) nor commit a group's offsets from outside while it has members, so it writes
  the queue topic's end offsets; a record below its partition's mark is settled without being
  delivered, and ``depth`` counts from the mark. Marks only grow.
* **hand-outs** (key ``handout:<group>:<partition>``): Kafka keeps no delivery count, and this
  broker's commit metadata is not kept either. So when a consumer that was just assigned a
  partition hands out the record at which it resumed, it first records "offset O handed out
  the n-th time". A record that kills every worker that runs it stays at the resume point of
  each new owner, its count grows by one per crash, and the worker dead-letters it after
  ``max_deliveries``. One small write per assignment, none per message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from qtasks_kafka.client import KafkaClient, read_to

log = logging.getLogger("qtasks.kafka")


class ControlLog:
    """Purge marks and hand-out counts; see the module docstring."""

    def __init__(self, client: KafkaClient) -> None:
        self.client, self.topic = client, client.target.control_topic
        self._marks: dict[str, dict[int, int]] = {}
        self._handouts: dict[str, tuple[int, int]] = {}
        self._follow: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Read every record written so far, then follow the topic in the background."""
        reader = self.client.reader
        tps = await self.client.partitions(self.topic, count=1)
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        self._apply(await read_to(reader, await self.client.end_offsets(tps)))
        self._follow = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            await asyncio.gather(self._follow, return_exceptions=True)

    # ------------------------------------------------------------------ purge marks

    def below(self, topic: str, partition: int) -> int:
        return self._marks.get(topic, {}).get(partition, 0)

    async def mark(self, topic: str, offsets: dict[int, int]) -> None:
        """Purge every record of ``topic`` below these offsets, here at once, elsewhere soon."""
        await self._write(f"purge:{topic}", {str(p): o for p, o in offsets.items()})
        self._merge(topic, offsets)

    def _merge(self, topic: str, offsets: dict[int, int]) -> None:
        known = self._marks.setdefault(topic, {})
        for partition, offset in offsets.items():
            known[partition] = max(known.get(partition, 0), offset)

    # ------------------------------------------------------------------ hand-outs

    def handed_out(self, group: str, partition: int, offset: int) -> int:
        """How often the record at ``offset`` was handed out by earlier owners."""
        found = self._handouts.get(f"{group}:{partition}")
        return found[1] if found is not None and found[0] == offset else 0

    async def hand_out(self, group: str, partition: int, offset: int, times: int) -> None:
        """Record (durably, before the record is run) that it is handed out the ``times``-th time."""
        await self._write(f"handout:{group}:{partition}", {"o": offset, "n": times})
        self._handouts[f"{group}:{partition}"] = (offset, times)

    # ------------------------------------------------------------------ the topic

    async def _write(self, key: str, value: dict[str, int]) -> None:
        await self.client.send(self.topic, json.dumps(value).encode(), key.encode(), {})

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                batch = await self.client.reader.getmany(timeout_ms=1000)
                self._apply([r for records in batch.values() for r in records])
                backoff = 0.1
            except Exception as exc:  # keep following; nothing here is lost by waiting
                log.warning("kafka.control_log_failed error=%r retry_in=%s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _apply(self, records: list[Any]) -> None:
        for record in records:
            try:
                kind, _, name = record.key.decode().partition(":")
                value = json.loads(record.value)
                if kind == "purge":
                    self._merge(name, {int(p): int(o) for p, o in value.items()})
                elif kind == "handout":
                    self._handouts[name] = (int(value["o"]), int(value["n"]))
            except (ValueError, AttributeError, TypeError, KeyError, OverflowError):
                continue  # not a record of ours (OverflowError: int() of an infinite float)
