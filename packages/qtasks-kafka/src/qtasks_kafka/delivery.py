"""``KafkaDelivery``: one record handed to a worker, fenced by its slot's token.

Settling marks the slot settled and commits the partition's contiguous settled prefix (the
acks of many deliveries share one commit). ``nack`` and ``dead_letter`` first write the new
record -- the retry, or the dead letter -- durably, then settle the original: a crash in
between redelivers the original, never loses it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from qtasks_kafka.partition import LEASED, READY, SETTLED, PartitionState, Slot

if TYPE_CHECKING:
    from qtasks_kafka.consumer import QueueConsumer


class KafkaDelivery:
    """A leased record; see the module docstring."""

    __slots__ = ("_consumer", "_slot", "_state", "_token", "body", "count")

    def __init__(self, consumer: QueueConsumer, state: PartitionState, slot: Slot, token: int) -> None:
        self._consumer, self._state, self._slot, self._token = consumer, state, slot, token
        self.body, self.count = slot.value, slot.count

    async def ack(self) -> None:
        await self._settle(None)

    async def nack(self, delay: float = 0.0, body: bytes | None = None) -> None:
        eta = time.time() + delay if delay > 0 else None
        value = self._slot.value if body is None else body
        await self._settle(lambda: self._consumer.requeue(self._slot, value, eta))

    async def extend(self, lease: float) -> bool:
        slot = self._slot
        if not self._state.holds(slot, self._token):
            return False
        if slot.deadline != math.inf:  # not while its copy is being written
            slot.deadline = time.monotonic() + lease
        return True

    async def dead_letter(self, reason: str) -> None:
        await self._settle(lambda: self._consumer.bury(self._state, self._slot, reason))

    def release(self) -> None:
        """Give the record back untouched (its fetch did not return it)."""
        if self._state.holds(self._slot, self._token):
            self._slot.state, self._slot.count = READY, self._slot.count - 1

    async def _settle(self, write: Callable[[], Awaitable[Any]] | None) -> None:
        """Write the follow-up record (if any), settle, commit. A fenced delivery does nothing;
        a repeated call (after a failed commit) only commits again."""
        state, slot = self._state, self._slot
        if not state.owned or slot.token != self._token:
            return
        if slot.state == LEASED:
            if write is not None:
                deadline, slot.deadline = slot.deadline, math.inf  # no lapse while the copy is written
                try:
                    await write()
                except BaseException:
                    slot.deadline = deadline
                    raise
            slot.state = SETTLED
        elif slot.state != SETTLED:
            return
        await self._consumer.flush()
