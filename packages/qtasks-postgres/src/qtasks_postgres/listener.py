"""LISTEN on a connection of its own, kept up across reconnects: how fetches and waiters are woken.

Pooled connections cannot listen (the pool resets them with ``UNLISTEN *`` when they are
released), so each app has one more connection, opened the first time something waits, that
LISTENs to the channels asked for. Notifications are handed to the channel's callback on the
event loop.

When the connection is lost, notifications sent meanwhile are lost with it: every channel's
``on_reset`` is called, so whoever waits looks again (and polls until the listener is back), and
called once more when it is back. The connection is reconnected with backoff and checked with a
``SELECT 1`` every few seconds when quiet, so a server that vanished without closing the socket
is noticed too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from qtasks.log import get_logger

log = get_logger("qtasks.postgres")

#: Seconds between two checks of a quiet listening connection.
KEEPALIVE = 5.0


@dataclass
class _Channel:
    on_message: Callable[[str], None]
    on_reset: Callable[[], None]
    live: asyncio.Event = field(default_factory=asyncio.Event)


class Listener:
    """Keeps the channels it was asked for LISTENed on a connection made by ``connect``."""

    def __init__(self, connect: Callable[[], Awaitable[Any]], shown: str) -> None:
        self._connect, self._shown = connect, shown
        self._channels: dict[str, _Channel] = {}
        self._conn: Any = None
        self._lock = asyncio.Lock()  # one operation at a time on the connection
        self._runner: asyncio.Task[None] | None = None
        self._served = False  # whether the last connection got to listen

    def live(self, channel: str) -> bool:
        """Whether notifications on ``channel`` are being received now."""
        found = self._channels.get(channel)
        return found is not None and found.live.is_set()

    async def listen(
        self, channel: str, on_message: Callable[[str], None], on_reset: Callable[[], None], timeout: float
    ) -> bool:
        """Receive ``channel`` from now on (the callbacks are kept from the first call); True once
        it is LISTENed, False if that took longer than ``timeout`` (it goes on in the background)."""
        found = self._channels.get(channel)
        if found is None:
            found = self._channels[channel] = _Channel(on_message, on_reset)
            if self._conn is not None:
                with contextlib.suppress(Exception):  # lost meanwhile: the runner listens again
                    async with self._lock:
                        await self._conn.add_listener(channel, self._dispatch)
                    found.live.set()
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        if found.live.is_set():
            return True
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await found.live.wait()
        except TimeoutError:
            return False
        return True

    def _dispatch(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        found = self._channels.get(channel)
        if found is not None:
            found.on_message(payload)

    async def _run(self) -> None:
        """Connect, listen, serve until the connection is lost; again, with backoff."""
        pause = 0.05
        while True:
            try:
                conn = await self._connect()
            except Exception as exc:
                log.warning("postgres.listener_reconnecting", url=self._shown, error=str(exc), retry_in=pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            try:
                await self._serve(conn)
                log.warning("postgres.listener_lost", url=self._shown)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("postgres.listener_lost", url=self._shown, error=f"{type(exc).__name__}: {exc}")
            finally:
                self._conn = None
                for found in self._channels.values():
                    found.live.clear()
                conn.terminate()
            self._reset()
            if self._served:
                pause = 0.05  # it was live: reconnect at once
            else:
                await asyncio.sleep(pause)  # it never got to listen: do not spin
                pause = min(pause * 2, 1.0)

    async def _serve(self, conn: Any) -> None:
        """LISTEN on ``conn`` to every channel asked for; return when the connection is lost."""
        self._served = False
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _: lost.set())
        async with self._lock:
            self._conn = conn
            for name in list(self._channels):
                await conn.add_listener(name, self._dispatch)
        self._went_live()
        self._served = True
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KEEPALIVE):
                    await lost.wait()
            if not lost.is_set():
                async with self._lock:
                    await asyncio.wait_for(conn.execute("SELECT 1"), KEEPALIVE)

    def _went_live(self) -> None:
        for found in self._channels.values():
            found.live.set()
        self._reset()  # anything may have happened while nobody listened

    def _reset(self) -> None:
        for found in list(self._channels.values()):
            found.on_reset()

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._channels.clear()
