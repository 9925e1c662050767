"""What callers do with tasks once submitted: read and wait for records, cancel, purge queues,
inspect, replay and drop dead letters. :class:`Admin` is a base of the app; every method runs on
the app's home loop (:func:`home_loop`), whichever loop or thread awaits it."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from qtasks.errors import MalformedMessage, TaskTimeoutError
from qtasks.messages import Record, Status
from qtasks.protocols import DeadLetter, Envelope

if TYPE_CHECKING:
    from qtasks.config import Config
    from qtasks.messages import Message

P = ParamSpec("P")
R = TypeVar("R")


def home_loop(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Run an app method on the loop the app lives on, whichever loop awaits it, once the app
    has started (it starts on first use)."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        app: Any = args[0]
        loop = app._loop
        if loop is None or loop.is_closed() or loop is asyncio.get_running_loop():
            await app.start()
            return await method(*args, **kwargs)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(wrapper(*args, **kwargs), loop))

    return wrapper


class Admin:
    """The app's calls about submitted tasks (a base class of :class:`qtasks.app.QueueTasks`)."""

    if TYPE_CHECKING:  # provided by the app
        broker: Any
        storage: Any
        serializer: Any
        config: Config

        def decode(self, body: bytes) -> Message: ...

    @home_loop
    async def get(self, task_id: Any) -> Record | None:
        """The task's record, or None if there is none (unknown or expired)."""
        record: Record | None = await self.storage.get(str(task_id))
        return record

    @home_loop
    async def wait(self, task_id: Any, timeout: float) -> Record:
        """Wait for the task's final record; :class:`TaskTimeoutError` after ``timeout`` s."""
        record: Record | None = await self.storage.wait(str(task_id), timeout)
        if record is None:
            raise TaskTimeoutError(str(task_id), timeout)
        return record

    @home_loop
    async def cancel(self, task_id: Any, reason: str = "") -> bool:
        """Cancel a queued or running task; False if it had already finished or is unknown.

        A queued task never starts; a running async task is interrupted within about a second;
        a running sync function cannot be interrupted: it is marked cancelled and its result
        is discarded.
        """
        record = await self.storage.get(str(task_id))
        if record is None or record.status.final:
            return False
        now = time.time()
        record.status, record.reason = Status.CANCELLED, reason or "cancelled"
        record.updated_at = record.finished_at = now
        return bool(await self.storage.save(record, self.config.result_ttl))

    @home_loop
    async def purge(self, queue: str = "default") -> int:
        """Delete every queued message of ``queue``; returns how many."""
        return int(await self.broker.purge(queue))

    @home_loop
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return list(await self.broker.dead_letters(limit))

    @home_loop
    async def replay(self, dead_id: str | None = None) -> int:
        """Send dead letters (one by id, or all when None) back to their queues."""
        replayed = []
        for dead in await self.broker.dead_letters(1_000_000):
            if dead_id is not None and dead.id != dead_id:
                continue
            priority = 0
            try:
                message = self.decode(dead.body)
                priority = message.priority
                await self.storage.delete(message.id)
            except MalformedMessage:
                message = None
            await self.broker.publish(Envelope(message.id if message else dead.id, dead.queue, dead.body, priority))
            replayed.append(dead.id)
        if replayed:
            await self.broker.purge_dead(replayed)
        return len(replayed)

    @home_loop
    async def purge_dead(self) -> int:
        return int(await self.broker.purge_dead(None))
