"""``postgres`` storage: task records with a TTL, and waiters woken by NOTIFY.

A record is a row ``(id, status, data, expires_at)``. Saves go through the ``apply`` function
with the other writes of the event-loop turn, which enforces the two save rules in its
``INSERT ... ON CONFLICT DO UPDATE ... WHERE``: a ``new`` record is only inserted (over nothing
but an expired row), and a final record is never overwritten until it expires. Expired rows are
invisible at once and deleted by a sweep once a minute.

Waiting is pushed: the save that makes a record final notifies its id on the app's ``done``
channel (the ids of one batch share notifications, a few hundred each); a waiter LISTENs there
(one connection per app, however many waiters), registers before it reads the record, and reads
it again when woken. While the listener is down, waiters poll until it is back.
"""

from __future__ import annotations

import asyncio
from typing import Any

from qtasks.messages import FINAL, Record

from qtasks_postgres.database import Database
from qtasks_postgres.writes import Ack, Save, Settle

#: While the listener is down, a waiter looks this often.
POLL = 0.25
#: The start of a record id stored in hex (see :func:`stored_id`).
ESCAPED = "~qtasks-hex:"


def stored_id(task_id: str) -> str:
    """The id a record is stored under: the task id itself, unless PostgreSQL's text cannot hold
    it (a NUL, or a lone surrogate: a hand-made message may carry either). Those, and ids that
    look like the escaped form, are stored as ``ESCAPED`` + the hex of their UTF-8, so every id
    has a record and no two share one."""
    try:
        task_id.encode()
    except UnicodeEncodeError:
        pass
    else:
        if "\x00" not in task_id and not task_id.startswith(ESCAPED):
            return task_id
    return ESCAPED + task_id.encode("utf-8", "surrogatepass").hex()


class PostgresStorage:
    """Records in the app's records table; see the module docstring."""

    def __init__(self, db: Database, serializer: Any) -> None:
        self.db, self._serializer = db, serializer
        db.holds_records = True
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    async def start(self) -> None:
        await self.db.open()

    async def stop(self) -> None:
        self._wake_all()
        await self.db.close()

    async def save(self, record: Record, ttl: float, ack: Ack | None = None) -> bool:
        """Write the record unless a save rule forbids it; True if written. With ``ack`` (a
        delivery's, on this database: its ``ack_with``), that message is acked in the same
        write, written or not."""
        data = self._serializer.dumps(record.to_dict())
        key = stored_id(record.id)
        save = Save(key, record.status.value, data, float(ttl))
        written = bool(await self.db.write(save if ack is None else Settle(save, ack)))
        if written and record.status in FINAL:
            self._woken(key)  # the waiters of this process need not wait for the notification
        return written

    async def get(self, task_id: str) -> Record | None:
        return await self._get(stored_id(task_id))

    async def _get(self, key: str) -> Record | None:
        data = await self.db.read(key)
        return None if data is None else Record.from_dict(self._serializer.loads(data))

    async def wait(self, task_id: str, timeout: float) -> Record | None:
        key = stored_id(task_id)  # waiters are known by the id the notifications carry
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        channel = self.db.names.done_channel
        await self.db.listener.listen(channel, self._notified, self._wake_all, max(0.0, min(timeout, 2.0)))
        while True:
            woken = loop.create_future()
            waiting = self._waiters.setdefault(key, [])
            waiting.append(woken)  # before reading: a save in between still wakes us
            try:
                record = await self._get(key)
                if record is not None and record.status in FINAL:
                    return record
                left = deadline - loop.time()
                if left <= 0:
                    return None
                if not self.db.listener.live(channel):
                    left = min(left, POLL)
                await asyncio.wait([woken], timeout=left)
            finally:
                if woken in waiting:
                    waiting.remove(woken)
                if not waiting and self._waiters.get(key) is waiting:
                    del self._waiters[key]

    def _notified(self, payload: str) -> None:
        """A notification: ids of records that became final, one per line ('' for any)."""
        for key in payload.split("\n"):
            if key:
                self._woken(key)
            else:
                self._wake_all()

    def _woken(self, key: str) -> None:
        for fut in self._waiters.pop(key, ()):
            if not fut.done():
                fut.set_result(None)

    def _wake_all(self) -> None:
        for key in list(self._waiters):
            self._woken(key)

    async def delete(self, task_id: str) -> bool:
        return bool(await self.db.execute(self.db.sql.delete, stored_id(task_id)))
