"""What one consumer holds of one assigned partition: the records read and not yet committed.

Records are kept in offset order as *slots*. A slot is ``READY`` (read, not handed out: due, or
early and held), ``LEASED`` (handed to a worker, with a local deadline and a fencing token),
``REQUEUING`` (held too long: its copy is being written at the tail; not handed out meanwhile)
or ``SETTLED`` (acked, nacked, dead-lettered, or re-queued). The committable position is the
offset of the first slot that is not settled: settling out of order commits only the contiguous
settled prefix, so a crash redelivers exactly the unsettled records and those after them.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from qtasks_kafka import headers as h

READY, LEASED, REQUEUING, SETTLED = "ready", "leased", "requeuing", "settled"
_tokens = itertools.count(1)


@dataclass(slots=True)
class Slot:
    """One record of the partition and its local state."""

    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    eta: float | None
    #: deliveries so far (those of earlier copies, from the header, plus ours)
    count: int
    read_at: float = field(default_factory=time.monotonic)
    state: str = READY
    token: int = 0
    deadline: float = 0.0  #: lease expiry (monotonic) while LEASED

    @classmethod
    def of(cls, record: Any) -> Slot:
        found = h.decode(record.headers)
        return cls(record.offset, record.key, record.value or b"", found, h.eta(found), h.count(found))

    def lease(self, seconds: float) -> int:
        self.state, self.token, self.count = LEASED, next(_tokens), self.count + 1
        self.deadline = time.monotonic() + seconds
        return self.token


@dataclass(frozen=True, slots=True)
class Settled:
    """The offsets of a partition settled here at one moment: every offset read below
    ``position`` (the settled prefix, committed or about to be), and those in ``beyond``."""

    position: int
    beyond: tuple[int, ...]

    def between(self, low: int, high: int) -> int:
        """How many offsets from ``low`` (at least the committed offset) to ``high`` are settled."""
        prefix = max(0, min(self.position, high) - low)
        return prefix + sum(1 for offset in self.beyond if max(low, self.position) <= offset < high)


class PartitionState:
    """The slots of one partition assignment. ``owned`` turns False for good when the partition
    is assigned elsewhere: every delivery made from it is then fenced."""

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        self.slots: deque[Slot] = deque()
        self.owned = True
        #: True between a revocation and the next assignment (the partition may come back)
        self.suspended = False
        self.next_offset = -1  #: one past the last offset read; -1 before the first record
        self.committed = -1  #: the position last committed by us
        #: the first offset read in this assignment (where it resumed); None before the first record
        self.resumed_at: int | None = None

    def add(self, record: Any) -> bool:
        """Keep a record just read; False if it was read before (after a seek back)."""
        if record.offset < self.next_offset:
            return False
        if self.resumed_at is None:
            self.resumed_at = record.offset
        self.next_offset = record.offset + 1
        self.slots.append(Slot.of(record))
        return True

    @property
    def position(self) -> int:
        """The offset to commit: the first slot not settled, else one past the last read."""
        while self.slots and self.slots[0].state == SETTLED:
            self.slots.popleft()
        return self.slots[0].offset if self.slots else self.next_offset

    @property
    def dirty(self) -> bool:
        return self.position > self.committed and self.position >= 0

    def settled(self) -> Settled:
        position = self.position
        return Settled(position, tuple(s.offset for s in self.unsettled(SETTLED)))

    def unsettled(self, state: str) -> Iterator[Slot]:
        return (s for s in self.slots if s.state == state)

    def holds(self, slot: Slot, token: int) -> bool:
        """Whether a delivery of ``slot`` with ``token`` still holds it (not fenced)."""
        return self.owned and slot.token == token and slot.state == LEASED
