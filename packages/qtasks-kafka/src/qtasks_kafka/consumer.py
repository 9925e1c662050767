"""``QueueConsumer``: the group consumer of one queue in one process.

Every worker of a queue is a member of the queue's consumer group, so the group's partition
assignment decides who may deliver what: **the lease of a delivery is its partition**. A worker
that dies stops heart-beating; after the session timeout its partitions go to the others, which
resume at the last committed offset and so deliver its unsettled records again.

A pump task reads records into the partition states (at most ``buffer`` due records ahead;
partitions are paused beyond that, and the pump keeps polling so the member stays alive);
``take`` hands them out. A rebalance first gives the deliveries in flight on the revoked
partitions part of the rebalance timeout to settle, commits, and keeps the states suspended: a
partition that comes back (the sticky assignor keeps most in place) carries on where it was,
with its deliveries still valid; one that went elsewhere is dropped, fencing its deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    CommitFailedError,
    ConsumerStoppedError,
    IllegalStateError,
    KafkaError,
)

from qtasks_kafka import headers as h
from qtasks_kafka.delivery import KafkaDelivery
from qtasks_kafka.partition import LEASED, READY, REQUEUING, SETTLED, PartitionState, Settled, Slot

if TYPE_CHECKING:
    from qtasks_kafka.broker import KafkaBroker

log = logging.getLogger("qtasks.kafka")

#: The pump polls at least this often (ms): it also re-queues held records that are still early.
POLL_MS = 200
#: Held (early) records beyond this many times ``buffer`` pause the partitions too.
HELD_FACTOR = 10


class QueueConsumer(ConsumerRebalanceListener):  # type: ignore[misc]
    """One queue's group member; see the module docstring."""

    def __init__(self, broker: KafkaBroker, queue: str) -> None:
        self.broker, self.queue, self.client = broker, queue, broker.client
        target = broker.target
        self.topic, self.group = target.topic(queue), target.group_id(queue)
        self.buffer, self.hold = target.numbers["buffer"], target.numbers["hold_ms"] / 1000
        timings = target.consumer_options()
        #: a revoked partition's deliveries get this long to settle before it is handed over
        self.revoke_wait = min(5.0, timings["rebalance_timeout_ms"] / 2000)
        #: how long a fetch waits for a (re)join before it may answer "nothing"
        self.join_wait = 6 * max(timings["session_timeout_ms"], timings["rebalance_timeout_ms"]) / 1000 + 5
        self.control = broker.control
        self.states: dict[Any, PartitionState] = {}
        #: (state, slot) of resume-point records handed out by ``take``, not yet recorded
        self.handouts: list[tuple[PartitionState, Slot]] = []
        self.joining_until = time.monotonic() + self.join_wait
        self.consumer: Any = None
        self._pump: asyncio.Future[None] | None = None
        self._committing: asyncio.Future[None] | None = None
        self._closing = False
        self._paused: set[Any] = set()
        self._fresh: set[Any] = set()  #: assigned, not yet read to their end once
        self._settled = asyncio.Event()  #: set whenever a delivery settles
        self._taken = asyncio.Event()  #: set whenever ``take`` hands records out
        self._background: set[asyncio.Future[None]] = set()

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        await self.client.partitions(self.topic)
        self.consumer = self.client.consumer(self.group, {})
        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=self)
        self._pump = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Commit what is settled and leave the group (its partitions go to the others)."""
        self._closing = True
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.flush()
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
        for state in self.states.values():
            state.owned = False
        self.states.clear()

    # ------------------------------------------------------------------ rebalances

    async def on_partitions_revoked(self, revoked: Any) -> None:
        gone = [self.states[tp] for tp in revoked if tp in self.states]
        if not gone:
            return
        self.joining_until = time.monotonic() + self.join_wait
        for state in gone:
            state.suspended = True
        deadline = time.monotonic() + (0 if self._closing else self.revoke_wait)
        while (left := deadline - time.monotonic()) > 0 and any(any(s.unsettled(LEASED)) for s in gone):
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._settled.wait()
        try:
            await self._commit({s.tp: s.position for s in gone if s.dirty}, gone)
        except Exception as exc:  # the next owner starts from the last commit: redelivery, no loss
            log.warning("kafka.commit_on_revoke_failed topic=%s error=%r", self.topic, exc)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        for tp in assigned:
            state = self.states.get(tp)
            if state is None or not state.suspended:
                self.states[tp] = PartitionState(tp)
                continue
            state.suspended = False  # it came back: carry on where it was
            if state.next_offset >= 0:
                self.consumer.seek(tp, state.next_offset)
        for tp in list(self.states):
            if tp not in assigned:
                self.states.pop(tp).owned = False  # fences its deliveries
        self._paused.clear()
        # still "joining" until each partition has been read up to its end once
        self._fresh = set(assigned)
        self.joining_until = time.monotonic() + self.join_wait if self._fresh else 0.0
        if any(s.dirty for s in self.states.values()):
            flushing = asyncio.ensure_future(self._flush_quietly())
            self._background.add(flushing)
            flushing.add_done_callback(self._background.discard)
        self.broker.wake()

    @property
    def joining(self) -> bool:
        """Waiting for a (re)assignment; bounded, so a fetch never waits for ever."""
        return bool(time.monotonic() < self.joining_until)

    # ------------------------------------------------------------------ reading

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._tend()
                self._taken.clear()
                poll_ms = POLL_MS
                if self._throttle():  # a full buffer: read on as soon as the worker takes from it
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL_MS / 1000):
                            await self._taken.wait()
                    self._throttle()
                    poll_ms = 0  # polled all the same: a consumer that stops polling leaves its group
                batch = await self.consumer.getmany(timeout_ms=poll_ms, max_records=self.buffer)
                added = False
                for tp, records in batch.items():
                    state = self.states.get(tp)
                    if state is not None and not state.suspended:
                        for record in records:
                            added = state.add(record) or added
                if self._fresh:
                    await self._caught_up()
                if added:
                    self.broker.wake()
                backoff = 0.1
            except ConsumerStoppedError:
                return
            except Exception as exc:  # the cluster away, a rebalance error: keep going
                log.warning("kafka.consume_failed topic=%s error=%r retry_in=%s", self.topic, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _caught_up(self) -> None:
        """Forget the freshly assigned partitions that were read to their end (or gave records);
        once none is left, a fetch may answer "nothing"."""
        for tp in list(self._fresh):
            state, highwater = self.states.get(tp), self.consumer.highwater(tp)
            if (
                state is None
                or state.slots
                or (highwater is not None and await self.consumer.position(tp) >= highwater)
            ):
                self._fresh.discard(tp)
        if not self._fresh:
            self.joining_until = 0.0
            self.broker.wake()

    def _throttle(self) -> bool:
        """Pause the partitions while enough is buffered; resume when half of it is taken.
        True while paused: then there is nothing to poll for (a poll would sit out its timeout
        while the worker empties the buffer)."""
        now = time.time()
        live = [s for s in self.states.values() if not s.suspended]
        due = held = 0
        for state in live:
            for slot in state.unsettled(READY):
                if slot.eta is not None and slot.eta > now:
                    held += 1
                else:
                    due += 1
        tps = {s.tp for s in live}
        full = due >= self.buffer or held >= HELD_FACTOR * self.buffer
        if full or (self._paused and due >= self.buffer // 2 and self._paused == tps):
            if self._paused != tps:
                self.consumer.pause(*tps)
                self._paused = tps
            return bool(tps)
        if self._paused:
            self.consumer.resume(*self._paused)
            self._paused = set()
        return False

    async def _tend(self) -> None:
        """Re-queue held records still early after ``hold`` seconds (so one long delay never
        blocks a partition's commits for long), and drop purged ones."""
        changed = False
        for state in list(self.states.values()):
            if state.suspended:
                continue
            below = self.control.below(self.topic, state.tp.partition)
            for slot in list(state.unsettled(READY)):
                # each write below awaits: meanwhile a fetch may have taken a slot of this list
                # (it fell due), so its state and the clocks are read afresh for every slot
                if slot.state != READY:
                    continue
                if slot.offset < below:
                    slot.state, changed = SETTLED, True
                elif self._held_too_long(slot):
                    changed = await self._requeue_held(slot) or changed
        if changed:
            await self.flush()

    def _held_too_long(self, slot: Slot) -> bool:
        """Still early, and held for ``hold`` seconds: to be written again at the tail."""
        early = slot.eta is not None and slot.eta > time.time()
        return early and time.monotonic() - slot.read_at >= self.hold

    async def _requeue_held(self, slot: Slot) -> bool:
        """Write a held record again at the tail and settle it; True if it was settled. While
        the copy is written the slot is ``REQUEUING``, which ``take`` does not hand out (else
        the record would run twice, and the copy's settling would fence its holder); a failed
        write makes it ``READY`` again."""
        slot.state = REQUEUING
        try:
            await self.requeue(slot, slot.value, slot.eta, count=slot.count)
        except BaseException:
            if slot.state == REQUEUING:
                slot.state = READY
            raise
        if slot.state != REQUEUING:  # defensive: nothing else leaves REQUEUING today
            return False
        slot.state = SETTLED
        return True

    def take(self, limit: int, lease: float, due_by: float | None = None) -> list[KafkaDelivery]:
        """Lease up to ``limit`` records due by ``due_by`` (default: now); a lapsed lease makes
        its record due again."""
        found: list[KafkaDelivery] = []
        now, clock = due_by or time.time(), time.monotonic()
        for state in list(self.states.values()):
            if state.suspended:
                continue
            below = self.control.below(self.topic, state.tp.partition)
            for slot in state.slots:
                if len(found) >= limit:
                    return found
                if slot.state == LEASED and slot.deadline <= clock:
                    slot.state = READY  # lapsed: the next lease gets a new token
                if slot.state != READY or (slot.eta is not None and slot.eta > now):
                    continue
                if slot.offset < below:
                    slot.state = SETTLED
                    continue
                token = slot.lease(lease)
                if slot.offset == state.resumed_at:  # see control.py: counted across owners
                    state.resumed_at = -1  # once per assignment
                    slot.count = max(
                        slot.count, self.control.handed_out(self.group, state.tp.partition, slot.offset) + 1
                    )
                    self.handouts.append((state, slot))
                found.append(KafkaDelivery(self, state, slot, token))
                self._taken.set()
        return found

    async def record_handouts(self) -> None:
        """Write the hand-outs ``take`` noted, before its deliveries are returned."""
        noted, self.handouts = self.handouts, []
        for state, slot in noted:
            await self.control.hand_out(self.group, state.tp.partition, slot.offset, slot.count)

    def settled(self) -> dict[Any, Settled]:
        """What is settled now on each owned partition: only the settled prefix is committed,
        so records settled behind a delayed or leased one would count in a depth read from the
        committed offsets."""
        return {tp: state.settled() for tp, state in self.states.items() if not state.suspended}

    def next_due(self) -> float | None:
        """Seconds until a held record falls due or a lease lapses, if any."""
        now, clock = time.time(), time.monotonic()
        due: list[float] = []
        for state in self.states.values():
            if not state.suspended:
                for slot in state.slots:
                    if slot.state == LEASED:
                        due.append(slot.deadline - clock)
                    elif slot.state == READY and slot.eta is not None:
                        due.append(slot.eta - now)
        return max(0.0, min(due)) if due else None

    # ------------------------------------------------------------------ writing

    async def requeue(self, slot: Slot, value: bytes, eta: float | None, count: int | None = None) -> None:
        """Write a copy of ``slot`` to the tail of the topic, due at ``eta``."""
        headers = {k: v for k, v in slot.headers.items() if k not in (h.ETA, h.COUNT)}
        headers[h.COUNT] = str(slot.count if count is None else count)
        if eta is not None:
            headers[h.ETA] = repr(float(eta))
        await self.client.send(self.topic, value, slot.key, headers)

    async def bury(self, state: PartitionState, slot: Slot, reason: str) -> None:
        await self.broker.dead.add(self.queue, f"{self.topic}:{state.tp.partition}:{slot.offset}", slot.value, reason)

    async def flush(self) -> None:
        """Commit the settled prefix of every owned partition; callers at the same time share
        one request. Returns quietly if a rebalance took the partitions meanwhile."""
        self._settled.set()
        while True:
            running = self._committing
            if running is not None and not running.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(running)
                continue
            states = [s for s in self.states.values() if not s.suspended and s.dirty]
            if not states:
                return
            running = self._committing = asyncio.ensure_future(self._commit({s.tp: s.position for s in states}, states))
            await asyncio.shield(running)
            return

    async def _commit(self, offsets: dict[Any, int], states: list[PartitionState]) -> None:
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError):
            if all(s.owned and not s.suspended for s in states):
                raise
            return  # a rebalance: committed on re-assignment, or redelivered by the next owner
        for state in states:
            state.committed = max(state.committed, offsets[state.tp])

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except Exception as exc:
            log.warning("kafka.commit_failed topic=%s error=%r", self.topic, exc)
