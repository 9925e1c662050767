"""``memory``: an in-process broker and storage, for tests and single-process apps.

They keep the whole contract (priorities, delays, leases, dead letters, sticky final records,
TTLs) so a test on ``memory`` means what it would on a server backend. Records go through the
app's serializer, so what a test reads back is what a real storage would return.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qtasks.hookspecs import hookimpl
from qtasks.messages import Record, Status
from qtasks.protocols import DEAD_LETTER, DELAY, LEASE, PRIORITY, DeadLetter, Envelope
from qtasks.registry import Registry


class Signal:
    """Wake every current waiter at once; waiters that come later wait for the next ``fire``."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def fire(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self, timeout: float) -> None:
        if self._event is None:
            self._event = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), max(timeout, 0))


@dataclass(slots=True)
class _Item:
    seq: int
    envelope: Envelope
    body: bytes
    version: int = 0
    token: int | None = None
    count: int = 0


class MemoryDelivery:
    __slots__ = ("_broker", "_item", "_token", "body", "count")

    def __init__(self, broker: MemoryBroker, item: _Item) -> None:
        self._broker, self._item, self._token = broker, item, item.token
        self.body, self.count = item.body, item.count

    def _mine(self) -> bool:
        return self._broker._items.get(self._item.seq) is self._item and self._item.token == self._token

    async def ack(self) -> None:
        if self._mine():
            del self._broker._items[self._item.seq]

    async def nack(self, delay: float = 0.0, body: bytes | None = None) -> None:
        if self._mine():
            if body is not None:
                self._item.body = body
            self._item.token = None
            self._broker._schedule(self._item, time.time() + delay)

    async def extend(self, lease: float) -> bool:
        if not self._mine():
            return False
        self._broker._schedule(self._item, time.time() + lease)
        return True

    async def dead_letter(self, reason: str) -> None:
        if self._mine():
            del self._broker._items[self._item.seq]
            env, now = self._item.envelope, time.time()
            dead = DeadLetter(f"d{self._item.seq}", env.queue, self._item.body, reason, now)
            self._broker._dead[dead.id] = (dead, now + self._broker._dead_ttl)


class MemoryBroker:
    capabilities = frozenset({PRIORITY, DELAY, LEASE, DEAD_LETTER})

    def __init__(self, dead_letter_ttl: float = 7 * 86400.0) -> None:
        self._seq, self._tokens = itertools.count(), itertools.count(1)
        self._items: dict[int, _Item] = {}
        self._ready: dict[str, list[tuple[int, int, int]]] = {}  # queue -> (priority, seq, version)
        self._timed: list[tuple[float, int, int]] = []  # (visible_at, seq, version)
        self._dead: dict[str, tuple[DeadLetter, float]] = {}
        self._dead_ttl = dead_letter_ttl
        self._signal = Signal()

    async def start(self) -> None: ...

    async def stop(self) -> None:
        self._signal.fire()

    def _schedule(self, item: _Item, visible_at: float) -> None:
        item.version += 1
        if visible_at <= time.time() and item.token is None:
            ready = self._ready.setdefault(item.envelope.queue, [])
            heapq.heappush(ready, (item.envelope.priority, item.seq, item.version))
            self._signal.fire()
        else:
            heapq.heappush(self._timed, (visible_at, item.seq, item.version))
            if item.token is None:
                self._signal.fire()  # a waiter may need a shorter timeout

    async def publish(self, envelope: Envelope) -> None:
        item = _Item(next(self._seq), envelope, envelope.body)
        self._items[item.seq] = item
        self._schedule(item, envelope.eta or 0.0)

    def _live(self, seq: int, version: int) -> _Item | None:
        item = self._items.get(seq)
        return item if item is not None and item.version == version else None

    def _promote(self, now: float) -> float | None:
        while self._timed and self._timed[0][0] <= now:
            _, seq, version = heapq.heappop(self._timed)
            item = self._live(seq, version)
            if item is not None:
                item.token = None
                self._schedule(item, 0.0)
        return self._timed[0][0] if self._timed else None

    def _claim(self, queues: Sequence[str], limit: int, lease: float) -> list[MemoryDelivery]:
        out: list[MemoryDelivery] = []
        heaps = [self._ready[q] for q in queues if q in self._ready]
        while len(out) < limit:
            heaps = [h for h in heaps if h]
            if not heaps:
                break
            top = min(heaps, key=lambda h: h[0])
            _, seq, version = heapq.heappop(top)
            item = self._live(seq, version)
            if item is None or item.token is not None:
                continue
            item.token, item.count = next(self._tokens), item.count + 1
            self._schedule(item, time.time() + lease)
            out.append(MemoryDelivery(self, item))
        return out

    async def fetch(self, queues: Sequence[str], limit: int, lease: float, wait: float) -> list[Any]:
        deadline = time.monotonic() + wait
        while True:
            now = time.time()
            next_at = self._promote(now)
            claimed = self._claim(queues, limit, lease)
            left = deadline - time.monotonic()
            if claimed or left <= 0:
                return claimed
            await self._signal.wait(min(left, next_at - now) if next_at is not None else left)

    async def depth(self, queue: str) -> int:
        return sum(1 for item in self._items.values() if item.envelope.queue == queue)

    async def purge(self, queue: str) -> int:
        doomed = [seq for seq, item in self._items.items() if item.envelope.queue == queue]
        for seq in doomed:
            del self._items[seq]
        return len(doomed)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        now = time.time()
        return [dead for dead, expires in self._dead.values() if expires > now][:limit]

    async def purge_dead(self, ids: Sequence[str] | None = None) -> int:
        doomed = list(self._dead) if ids is None else [i for i in ids if i in self._dead]
        for dead_id in doomed:
            del self._dead[dead_id]
        return len(doomed)


class MemoryStorage:
    def __init__(self, serializer: Any) -> None:
        self._serializer = serializer
        self._records: dict[str, tuple[bytes, Status, float]] = {}
        self._signals: dict[str, Signal] = {}

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def _current(self, task_id: str) -> tuple[bytes, Status, float] | None:
        found = self._records.get(task_id)
        if found is not None and found[2] <= time.time():
            del self._records[task_id]
            return None
        return found

    async def save(self, record: Record, ttl: float) -> bool:
        stored = self._current(record.id)
        if stored is not None and (stored[1].final or record.status == Status.NEW):
            return False
        data = self._serializer.dumps(record.to_dict())
        self._records[record.id] = (data, record.status, time.time() + ttl)
        if record.status.final and record.id in self._signals:
            self._signals.pop(record.id).fire()
        return True

    async def get(self, task_id: str) -> Record | None:
        stored = self._current(task_id)
        return Record.from_dict(self._serializer.loads(stored[0])) if stored else None

    async def wait(self, task_id: str, timeout: float) -> Record | None:
        deadline = time.monotonic() + timeout
        while True:
            record = await self.get(task_id)
            if record is not None and record.status.final:
                return record
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await self._signals.setdefault(task_id, Signal()).wait(left)

    async def delete(self, task_id: str) -> bool:
        return self._records.pop(task_id, None) is not None


@hookimpl
def qtasks_register_components(registry: Registry) -> None:
    registry.add_broker("memory", lambda r: MemoryBroker(r.config.dead_letter_ttl), schemes=("memory",))
    registry.add_storage("memory", lambda r: MemoryStorage(r.serializer), schemes=("memory",))
