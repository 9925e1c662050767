"""``redis`` storage: task records with a TTL, and waiters woken by the save itself.

A record is one string ``"<status>\\n<data>"`` at ``<prefix>:r:<task id>``, expiring ``ttl``
seconds after each save. The save rules are atomic on the server: a ``new`` record is a plain
``SET NX`` (insert only), every other status goes through ``save.lua``, which refuses to
overwrite a final record.

Waiting is pushed, never polled. A storage that waits subscribes once to a reply channel of its
own, and the save of a final record publishes the record to every channel in the task's waiter
set (``<prefix>:w:<task id>``). A channel gets into that set in one of two ways:

* once the subscription is up, every task this storage submits joins its channel to the set
  just before its ``new`` record is inserted (``SET NX GET``), in the same pipeline:
  ``add_task(..., timeout=)`` then waits with no round trip of its own, and is woken with the
  final record in hand (the record follows the message; should a quick worker store the final
  record first, the ``SET`` finds it; should its final record be pushed before the wait
  starts, the record is kept for that wait);
* any other wait runs ``wait.lua``, which returns the record if it is final already and
  otherwise adds the channel, atomically: one round trip.

If the subscription drops, messages may be lost: every waiter then falls back to ``wait.lua``
once the subscription is back.
"""

from __future__ import annotations

import asyncio
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from qtasks.messages import FINAL, Record, Status

if TYPE_CHECKING:
    from qtasks_redis.broker import RedisDelivery

from qtasks_redis.client import RedisClient
from qtasks_redis.keys import escape_id, unescape_id
from qtasks_redis.subscriber import Subscriber

T = TypeVar("T")
Waiter = asyncio.Future[Record | None]
FINAL_NAMES = frozenset(status.value for status in FINAL)
#: Final records kept for a wait to come (see ``_finish``), at most, and the largest kept: the
#: wait of an add_task starts right after its submit, so a few suffice; a larger record, or
#: one pushed out, is looked up by its wait instead (one round trip).
FINISHED = 256
KEPT_BYTES = 65_536
#: Tasks submitted while subscribed whose result has not come back yet, at most.
ANNOUNCED = 100_000


def _settle(fut: asyncio.Future[T], value: T) -> None:
    if not fut.done():
        fut.set_result(value)


def remember(store: dict[str, T], key: str, value: T, most: int) -> None:
    """Put ``key`` in ``store``, first dropping its oldest entry if it holds ``most`` already."""
    if len(store) >= most:
        del store[next(iter(store))]
    store[key] = value


class RedisStorage:
    def __init__(self, client: RedisClient, serializer: Any) -> None:
        self.client, self._serializer = client, serializer
        self._waiters: dict[str, list[Waiter]] = {}
        #: task id -> subscription generation in which its waiter set got our channel
        self._announced: dict[str, int] = {}
        #: the final records (their data) of tasks we submitted, come before anyone waited
        self._finished: dict[str, bytes] = {}
        self._replies = Subscriber(
            client.connect, client.keys.reply(uuid.uuid4().hex), self._received, self._reset, client.shown
        )

    async def start(self) -> None:
        await self.client.open()

    async def stop(self) -> None:
        await self._replies.close()
        self._reset()
        await self.client.close()

    def save(self, record: Record, ttl: float, ack: RedisDelivery | None = None) -> asyncio.Future[bool]:
        """Write the record unless a save rule forbids it; True if written. With ``ack`` (a
        delivery of the broker on this client: its ``ack_with``), that message is acked in the
        same script, whether or not the record was written.

        Returns an asyncio future rather than a coroutine (awaiting it is the same): ``add_task``
        runs it beside the broker's publish, and needs no task for it.
        """
        keys, client = self.client.keys, self.client
        data = self._serializer.dumps(record.to_dict())
        px = max(1, round(ttl * 1000))
        if record.status is Status.NEW:
            # insert only (SET NX), and say what was there (GET): no script needed. The channel
            # joins the waiter set first, so a final record stored after that is pushed to us,
            # and one stored before is what the SET finds.
            generation = self._replies.live
            insert = ("SET", keys.record(record.id), b"new\n" + data, "NX", "PX", px, "GET")
            if generation is None:
                return client.group((insert,), partial(self._inserted, record.id))
            waiters = keys.waiters(record.id)
            commands = (("SADD", waiters, self._replies.channel), ("PEXPIRE", waiters, px), insert)
            inserted = client.group(commands, partial(self._inserted, record.id))
            remember(self._announced, record.id, generation, ANNOUNCED)
            return inserted
        final = "1" if record.status in FINAL else "0"
        record_keys = (keys.record(record.id), keys.waiters(record.id))
        args = (record.status.value, data, px, final, escape_id(record.id))
        if ack is None:
            return client.script("save", record_keys, args, bool)
        lease_keys, lease = ack.lease  # the message is acked in the same script
        return client.script("save", (*record_keys, *lease_keys), (*args, *lease), bool)

    def _inserted(self, task_id: str, found: bytes | None) -> bool:
        """The reply of a ``new`` record's ``SET NX GET``: None if inserted, else the record that
        was there. If that one is final, no push will come: it is handed to the waits (those
        waiting now, or the next one)."""
        if found is None:
            return True
        status, _, data = found.partition(b"\n")
        if status.decode(errors="replace") in FINAL_NAMES:
            self._finish(task_id, data, self._waiters.get(task_id), ours=True)
        return False

    def get(self, task_id: str) -> asyncio.Future[Record | None]:
        return self.client.call("GET", self.client.keys.record(task_id), convert=self._stored)

    def _stored(self, raw: bytes | None) -> Record | None:
        """A stored ``"status\\ndata"`` value as a record."""
        return None if raw is None else self._decode(raw.partition(b"\n")[2])

    def _decode(self, data: bytes) -> Record:
        return Record.from_dict(self._serializer.loads(data))

    def _record(self, data: bytes) -> Record | None:
        try:
            return self._decode(data)
        except Exception:
            return None  # not a record: the waiters look it up themselves

    def _finish(self, task_id: str, data: bytes, waiting: list[Waiter] | None, ours: bool) -> None:
        """A final record come without being asked for: wake the waits, or, if none waits yet and
        we submitted the task (``ours``, or announced), keep it for the wait add_task starts next."""
        if (self._announced.pop(task_id, None) is not None or ours) and not waiting and len(data) <= KEPT_BYTES:
            remember(self._finished, task_id, data, FINISHED)
        record = self._record(data) if waiting else None
        for fut in waiting or ():
            _settle(fut, record)

    async def wait(self, task_id: str, timeout: float) -> Record | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        finished = self._finished.pop(task_id, None)
        if finished is not None and (record := self._record(finished)) is not None:
            return record
        announced = self._announced.get(task_id)
        pushed = announced is not None and announced == self._replies.live
        while True:
            woken: Waiter = loop.create_future()
            self._waiters.setdefault(task_id, []).append(woken)
            try:
                if not pushed:
                    if not await self._replies.ready(deadline - loop.time()):
                        return await self._final(task_id)  # no subscription in time: one last look
                    found = await self._register(task_id, deadline - loop.time())
                    if found is not None:
                        return found
                # at the deadline the wait is woken with None, as when the subscription is lost
                # (a timer handle costs half as much as asyncio.timeout, on every wait)
                expire = loop.call_at(deadline, _settle, woken, None)
                try:
                    record = await woken
                finally:
                    expire.cancel()
                if record is not None:
                    return record
                if loop.time() >= deadline:
                    return await self._final(task_id)  # one last look
                pushed = False  # the subscription was lost meanwhile: register again
            finally:
                self._forget(task_id, woken)

    async def _final(self, task_id: str) -> Record | None:
        record = await self.get(task_id)
        return record if record is not None and record.status.final else None

    async def _register(self, task_id: str, timeout: float) -> Record | None:
        """Join our channel to the task's waiters, or return the record if it is final already."""
        keys = self.client.keys
        args = (self._replies.channel, max(1, round(timeout * 1000)) + 1000)
        found: Record | None = await self.client.script(
            "wait", (keys.record(task_id), keys.waiters(task_id)), args, self._stored
        )
        return found

    def _forget(self, task_id: str, woken: Waiter) -> None:
        waiting = self._waiters.get(task_id)
        if waiting is not None:
            if woken in waiting:
                waiting.remove(woken)
            if not waiting:
                del self._waiters[task_id]

    def _received(self, message: bytes) -> None:
        """A final record published to our channel (``task id\\ndata``). It may come before the
        wait of the add_task that submitted it starts: a quick worker."""
        task_id, _, data = message.partition(b"\n")
        key = unescape_id(task_id.decode(errors="replace"))
        self._finish(key, data, self._waiters.pop(key, None), ours=False)

    def _reset(self) -> None:
        """Messages may have been lost: every waiter registers again and looks at its record."""
        self._announced.clear()
        waiting, self._waiters = self._waiters, {}
        for futures in waiting.values():
            for fut in futures:
                _settle(fut, None)

    def delete(self, task_id: str) -> asyncio.Future[bool]:
        self._finished.pop(task_id, None)
        return self.client.call("DEL", self.client.keys.record(task_id), convert=bool)
