"""``kafka`` broker: at-least-once delivery over one topic per queue.

* **publish** writes the body to ``<prefix>.<queue>`` (created on demand with ``partitions``
  partitions), keyed by the message id, with the eta and priority in headers, ``acks="all"``.
* **fetch** hands out records read by the queue's group consumer (``consumer.py``); the lease
  of a delivery is the partition assignment, plus a local deadline inside this process (a
  delivery nobody renews is handed out again here). Offsets are committed per partition up to
  the first unsettled record.
* **nack** writes the new body to the tail with its eta, then settles the original; an early
  record is held locally for at most ``hold_ms``, then re-queued the same way.
* **dead letters** go to ``<prefix>-dead`` (``dead.py``); **purge** writes a purge mark
  (``control.py``); **depth** is end offsets minus the group's committed offsets (or the mark),
  less the records this process settled but could not commit yet (an upper bound where another
  process owns the partition).

Kafka has no priorities: ``priority`` is carried in a header but not honoured, so PRIORITY is
not declared and a prioritised submit fails with ``CapabilityError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from qtasks.protocols import DEAD_LETTER, DELAY, LEASE, DeadLetter, Envelope

from qtasks_kafka import headers as h
from qtasks_kafka.client import KafkaClient
from qtasks_kafka.consumer import QueueConsumer
from qtasks_kafka.control import ControlLog
from qtasks_kafka.dead import DeadLetterTopic
from qtasks_kafka.partition import Settled
from qtasks_kafka.target import Target


class KafkaBroker:
    """One app's broker on a Kafka cluster; see the module docstring."""

    capabilities = frozenset({DELAY, LEASE, DEAD_LETTER})

    def __init__(self, target: Target, dead_letter_ttl: float = 7 * 86400.0) -> None:
        self.target = target
        self.client = KafkaClient(target)
        self.control = ControlLog(self.client)
        self.dead = DeadLetterTopic(self.client, float(dead_letter_ttl))
        self._consumers: dict[str, asyncio.Future[QueueConsumer]] = {}
        self._changed = asyncio.Event()
        self._turn = 0
        self._stopped = False  #: set by stop(): waiting fetches return at once

    async def start(self) -> None:
        self._stopped = False
        await self.client.start()
        try:
            await self.control.start()
        except BaseException:
            await self.client.stop()
            raise

    async def stop(self) -> None:
        self._stopped = True
        self.wake()  # waiting fetches return [] now, not after their wait
        consumers, self._consumers = list(self._consumers.values()), {}
        for pending in consumers:
            pending.cancel()
        started = [c.result() for c in consumers if c.done() and not c.cancelled() and c.exception() is None]
        await asyncio.gather(*(c.stop() for c in started), return_exceptions=True)
        await self.control.stop()
        await self.client.stop()
        self.wake()

    def wake(self) -> None:
        """Something changed (records read, an assignment): waiting fetches look again."""
        self._changed.set()

    async def publish(self, envelope: Envelope) -> None:
        topic = self.target.topic(envelope.queue)
        await self.client.partitions(topic)
        headers = {h.ID: envelope.id}
        if envelope.priority:
            headers[h.PRIORITY] = str(envelope.priority)
        if envelope.eta is not None:
            headers[h.ETA] = repr(float(envelope.eta))
        await self.client.send(topic, envelope.body, envelope.id.encode(), headers)

    async def _consumer(self, queue: str) -> QueueConsumer | None:
        """The queue's group consumer, started on first use (callers at once share the start);
        None if the broker was stopped meanwhile."""
        pending = self._consumers.get(queue)
        if pending is None or (pending.done() and (pending.cancelled() or pending.exception() is not None)):
            consumer = QueueConsumer(self, queue)

            async def start() -> QueueConsumer:
                try:
                    await consumer.start()
                except BaseException:
                    await consumer.stop()
                    raise
                return consumer

            pending = self._consumers[queue] = asyncio.ensure_future(start())
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopped and pending.cancelled() and not (task is not None and task.cancelling()):
                return None  # stop() cancelled the start, not our caller
            raise

    async def fetch(self, queues: Sequence[str], limit: int, lease: float, wait: float) -> list[Any]:
        """Lease up to ``limit`` due records. Taking them is synchronous, so a cancelled fetch
        has taken nothing. While a consumer is still joining its group (or rebalancing), "no
        records" is not an answer yet: the fetch waits for the assignment (bounded), then up to
        ``wait`` for records; past its deadline it hands out only what was due by then. Once the
        broker is stopped, a fetch (a waiting one too) answers [] at once."""
        if limit <= 0 or self._stopped:
            return []
        consumers: list[QueueConsumer] = []
        for queue in dict.fromkeys(queues):
            consumer = await self._consumer(queue)
            if consumer is None:
                return []
            consumers.append(consumer)
        loop = asyncio.get_running_loop()
        deadline = until = loop.time() + wait
        as_of = time.time() + wait  # a fetch that runs late answers as of its deadline
        while True:
            self._changed.clear()
            if self._stopped:
                return []
            self._turn += 1  # start with a different queue each time: no queue starves another
            late = loop.time() > deadline
            found: list[Any] = []
            for i in range(len(consumers)):
                consumer = consumers[(self._turn + i) % len(consumers)]
                found += consumer.take(limit - len(found), lease, as_of if late else None)
                if consumer.handouts:
                    try:
                        await consumer.record_handouts()
                    except BaseException:  # cancelled or failed: nothing was handed out
                        for delivery in found:
                            delivery.release()
                        raise
            if found:
                return found
            joining = any(c.joining for c in consumers)
            if joining:  # the wait starts when there is something to read from
                until = max(until, loop.time() + wait)
            left = until - loop.time()
            if left <= 0 and not joining:
                return []
            pauses = [left if left > 0 else 0.05, *(d for c in consumers if (d := c.next_due()) is not None)]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.001, min(pauses))):
                    await self._changed.wait()

    async def _backlog(self, queue: str) -> tuple[list[Any], dict[Any, int], int]:
        """Partitions, end offsets, and the records below them not settled: from the group's
        committed offset (or the partition start, or the purge mark), less those this process
        settled but could not commit yet (behind a delayed or leased one). What another process
        settled is not known here: on its partitions the count is an upper bound."""
        topic = self.target.topic(queue)
        tps = await self.client.existing(topic)  # reading never creates a topic
        if not tps:
            return [], {}, 0
        committed = await self.client.committed(self.target.group_id(queue), tps)
        first = dict(await self.client.reader.beginning_offsets(tps))
        start = {tp: max(committed[tp], first[tp], self.control.below(topic, tp.partition)) for tp in tps}
        consumer = self._running(queue)
        # read before the end offsets: the copy of a held record settled here is below them
        settled = consumer.settled() if consumer is not None else {}
        end = await self.client.end_offsets(tps)
        return tps, end, sum(max(0, end[tp] - start[tp] - _settled(settled.get(tp), start[tp], end[tp])) for tp in tps)

    def _running(self, queue: str) -> QueueConsumer | None:
        """The queue's group consumer in this process, if it is started."""
        pending = self._consumers.get(queue)
        if pending is not None and pending.done() and not pending.cancelled() and pending.exception() is None:
            return pending.result()
        return None

    async def depth(self, queue: str) -> int:
        """Records not settled (ready, delayed, leased); an upper bound on partitions another
        process owns (see ``_backlog``)."""
        return (await self._backlog(queue))[2]

    async def purge(self, queue: str) -> int:
        """Drop every record below the end offsets (a purge mark); returns what ``depth`` did."""
        tps, end, purged = await self._backlog(queue)
        if not tps:
            return 0
        await self.control.mark(self.target.topic(queue), {tp.partition: end[tp] for tp in tps})
        if self._running(queue) is not None:
            self.wake()  # buffered records below the mark are dropped at the next take
        return purged

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return await self.dead.entries(limit) if limit > 0 else []

    async def purge_dead(self, ids: Sequence[str] | None = None) -> int:
        return await self.dead.purge(ids)


def _settled(seen: Settled | None, low: int, high: int) -> int:
    """How many offsets from ``low`` to ``high`` this process had settled (none if unknown)."""
    return seen.between(low, high) if seen is not None else 0
