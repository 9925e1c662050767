"""A subscription to one channel that survives reconnects: where a storage's results arrive.

Each storage that waits for results owns one, on a channel of its own
(``<prefix>:reply:<random>``), on a connection of its own, subscribed once: a waiter adds the
channel to the task's waiter set and the save of the final record publishes the record there
(see ``wait.lua`` and ``save.lua``). So waiting costs one script call, whatever the number of
waiters, and no subscription per task.

When the connection is lost, messages published meanwhile are lost with it: ``on_reset`` is
called so that every waiter looks at its record again once the subscription is back (the
reader reconnects with backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from qtasks.log import get_logger

from qtasks_redis.connection import Pipe


class Subscriber:
    """Keeps ``channel`` subscribed on a connection made by ``connect``; calls ``on_message(data)``
    for each message and ``on_reset()`` when messages may have been missed."""

    def __init__(
        self,
        connect: Callable[[Callable[[Any], None]], Awaitable[Pipe]],
        channel: str,
        on_message: Callable[[bytes], None],
        on_reset: Callable[[], None],
        shown: str,
    ) -> None:
        self.channel = channel
        self._connect, self._on_message, self._on_reset, self._shown = connect, on_message, on_reset, shown
        self._ready: asyncio.Future[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        #: Counts confirmed subscriptions; a message sent while it had one value reached us
        #: unless it has changed since.
        self.generation = 0
        self.log = get_logger("qtasks.redis")

    @property
    def live(self) -> int | None:
        """The current generation if the subscription is confirmed now, else None."""
        return self.generation if self._ready is not None and self._ready.done() else None

    async def ready(self, timeout: float) -> bool:
        """Wait until the subscription is confirmed (starting it if needed); False on timeout."""
        if self._reader is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._reader = asyncio.get_running_loop().create_task(self._read())
        assert self._ready is not None
        if self._ready.done():
            return True
        try:
            async with asyncio.timeout(max(timeout, 0)):
                await asyncio.shield(self._ready)
        except TimeoutError:
            return False
        return True

    async def _read(self) -> None:
        backoff = 0.05
        while True:
            try:
                pipe = await self._connect(self._pushed)
            except Exception as exc:
                self.log.warning("redis.subscriber_reconnecting", url=self._shown, error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)
                continue
            try:
                await pipe.send("SUBSCRIBE", self.channel)  # the reply is the confirmation
                backoff = 0.05
                self.generation += 1
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
                lost = await pipe.lost
                self.log.warning("redis.subscriber_lost", url=self._shown, error=str(lost))
            except asyncio.CancelledError:
                pipe.close()
                raise
            except Exception as exc:
                self.log.warning("redis.subscriber_lost", url=self._shown, error=str(exc))
            pipe.close()
            if self._ready is not None and self._ready.done():
                self._ready = asyncio.get_running_loop().create_future()
            self.generation += 1
            self._on_reset()

    def _pushed(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            self._on_message(reply[2])

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = self._ready = None
