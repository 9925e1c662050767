"""``postgres`` broker: leased, at-least-once delivery with priorities, delays and dead letters.

A message is a row of the queue table. A fetch claims several ready rows in one statement
(``FOR UPDATE SKIP LOCKED``, lowest priority then oldest first), setting a fresh token -- the
fence of this lease -- and the lease deadline as the time the row becomes visible again: a
worker that dies simply stops renewing, and the row is ready for others at its deadline. Acks,
nacks, renewals and dead-lettering name the row *and* the token, so a holder whose lease lapsed
changes nothing once another worker has claimed the row.

No polling: a fetch that finds nothing waits for a NOTIFY on the app's queue channel (sent by
a trigger for every INSERT, and by every nack), or until the first message of its queues falls
due (a delay, or a lease that lapses: the claim reports when), whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from qtasks.protocols import DEAD_LETTER, DELAY, LEASE, PRIORITY, DeadLetter, Envelope

from qtasks_postgres.database import Database
from qtasks_postgres.storage import stored_id
from qtasks_postgres.writes import Ack, Bury, Extend, Nack, Publish

if TYPE_CHECKING:
    from qtasks.messages import Record

    from qtasks_postgres.storage import PostgresStorage

#: While the listener is down, a waiting fetch looks this often.
POLL = 0.25
#: A fetch that found its first due message locked by another claim looks again this soon.
LOCKED_PAUSE = 0.02
#: The longest queue name, in bytes of UTF-8: well inside what a btree index entry holds (about
#: 2,700 bytes with the rest of the key), and short enough to name its queue in a notification.
MAX_QUEUE_BYTES = 1000


class PostgresDelivery:
    """One leased row; every settlement is fenced by the lease token and group-committed."""

    __slots__ = ("_broker", "_seq", "_token", "body", "count", "fresh")

    def __init__(
        self, broker: PostgresBroker, seq: int, token: uuid.UUID, body: bytes, count: int, fresh: bool = False
    ) -> None:
        self._broker, self._seq, self._token, self.body, self.count = broker, seq, token, body, count
        self.fresh = fresh

    @property
    def ack_with(self) -> Callable[[Record, float], Awaitable[bool]] | None:
        """Delivery.ack_with, when the app's storage is on this database: the record's save and
        the ack as one write (:class:`~qtasks_postgres.writes.Settle`), not two batches."""
        return self._ack_with if self._broker.storage is not None else None

    async def _ack_with(self, record: Record, ttl: float) -> bool:
        assert self._broker.storage is not None
        return await self._broker.storage.save(record, ttl, ack=Ack(self._seq, self._token))

    async def ack(self) -> None:
        await self._broker.db.write(Ack(self._seq, self._token))

    async def nack(self, delay: float = 0.0, body: bytes | None = None) -> None:
        await self._broker.db.write(Nack(self._seq, self._token, float(delay), body))

    async def extend(self, lease: float) -> bool:
        return bool(await self._broker.db.write(Extend(self._seq, self._token, float(lease))))

    async def dead_letter(self, reason: str) -> None:
        readable = reason.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")  # text holds neither
        await self._broker.db.write(Bury(self._seq, self._token, readable, self._broker.dead_letter_ttl))


class PostgresBroker:
    """Messages in the app's queue table; see the module docstring."""

    capabilities = frozenset({PRIORITY, DELAY, LEASE, DEAD_LETTER})

    def __init__(self, db: Database, dead_letter_ttl: float = 7 * 86400.0) -> None:
        self.db, self.dead_letter_ttl = db, float(dead_letter_ttl)
        #: The app's storage when it shares this database (see ``plugin.make_storage``): each
        #: delivery's ``ack_with`` then stores the record and acks in one write.
        self.storage: PostgresStorage | None = None
        #: queue name -> the events of the fetches waiting for it
        self._waiting: dict[str, set[asyncio.Event]] = {}

    async def start(self) -> None:
        await self.db.open()

    async def stop(self) -> None:
        self._wake_all()
        await self.db.close()

    async def publish(self, envelope: Envelope) -> None:
        """Insert the message (with the other writes of this turn); the insert trigger wakes
        the fetches waiting for its queue."""
        if not -(2**31) <= envelope.priority < 2**31:
            raise ValueError(f"priority {envelope.priority} is out of range: PostgreSQL keeps a 32-bit integer")
        if len(envelope.queue.encode(errors="surrogatepass")) > MAX_QUEUE_BYTES:
            raise ValueError(
                f"queue name {envelope.queue[:40]!r}... is too long: at most {MAX_QUEUE_BYTES} bytes of UTF-8"
            )
        eta = None if envelope.eta is None else float(envelope.eta)
        # the id the task's record is stored under: text holds it, and the claim's `fresh` compares the two
        task_id = stored_id(envelope.id)
        await self.db.write(Publish(envelope.queue, envelope.priority, eta, envelope.body, task_id))

    async def fetch(self, queues: Sequence[str], limit: int, lease: float, wait: float) -> list[Any]:
        if limit <= 0:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        channel = self.db.names.queue_channel
        await self.db.listener.listen(channel, self._woken, self._wake_all, max(0.0, min(wait, 2.0)))
        ready = asyncio.Event()
        for queue in queues:
            self._waiting.setdefault(queue, set()).add(ready)
        try:
            while True:
                ready.clear()  # before claiming: a notification during the claim is not missed
                found, due_in = await self._claim(list(queues), limit, lease)
                if found:
                    return found
                left = deadline - loop.time()
                if left <= 0:
                    return []
                if due_in is not None:
                    left = min(left, due_in if due_in > 0 else LOCKED_PAUSE)
                if not self.db.listener.live(channel):
                    left = min(left, POLL)
                try:
                    async with asyncio.timeout(left):
                        await ready.wait()
                except TimeoutError:
                    pass
        finally:
            for queue in queues:
                waiting = self._waiting.get(queue)
                if waiting is not None:
                    waiting.discard(ready)
                    if not waiting:
                        del self._waiting[queue]

    async def _claim(self, queues: list[str], limit: int, lease: float) -> tuple[list[Any], float | None]:
        """Lease up to ``limit`` rows; if none, also when the next one falls due (seconds).

        Safe to cancel: a claim under way is finished and what it leased is given back as it
        was, its delivery count too (it was never handed out)."""
        token = uuid.uuid4()
        records = self.db.holds_records
        job = asyncio.ensure_future(self.db.fetch(self.db.sql.claim, token, float(lease), queues, limit, records))
        try:
            rows = await asyncio.shield(job)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # if this fails, what it leased comes back at its deadline
                rows = await job
                if seqs := [r["seq"] for r in rows if r["seq"] is not None]:
                    await self.db.execute(self.db.sql.unclaim, seqs, token)
            raise
        if len(rows) == 1 and rows[0]["seq"] is None:
            return [], rows[0]["due_in"]
        rows = sorted(rows, key=lambda r: (r["priority"], r["seq"]))
        return [PostgresDelivery(self, r["seq"], token, r["body"], r["count"], r["fresh"]) for r in rows], None

    def _woken(self, queue: str) -> None:
        """A notification: ready messages in ``queue`` ('' for any queue)."""
        if not queue:
            self._wake_all()
            return
        for event in self._waiting.get(queue, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiting.values():
            for event in events:
                event.set()

    async def depth(self, queue: str) -> int:
        return int(await self.db.fetchval(self.db.sql.depth, queue))

    async def purge(self, queue: str) -> int:
        return await self.db.execute(self.db.sql.purge, queue)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        rows = await self.db.fetch(self.db.sql.dead_letters, limit)
        return [DeadLetter(str(r["seq"]), r["queue"], r["body"], r["reason"], r["died_at"]) for r in rows]

    async def purge_dead(self, ids: Sequence[str] | None = None) -> int:
        if ids is None:
            return await self.db.execute(self.db.sql.purge_dead)
        seqs = [int(i) for i in ids if i.isascii() and i.isdigit() and len(i) < 19]  # int() reads any script's digits
        return await self.db.execute(self.db.sql.purge_dead_ids, seqs) if seqs else 0
