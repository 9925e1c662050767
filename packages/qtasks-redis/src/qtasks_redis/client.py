"""One Redis client per app and URL, shared by the broker and the storage.

Connections (each a :class:`~qtasks_redis.connection.Pipe`):

* **one pipelined connection** for every command that does not block. The first two writes
  of an event-loop turn leave at once, whatever else is issued in that turn, by any task,
  leaves together at its end, and replies are matched in order; later commands go out while
  earlier ones are in flight. That is how ``add_task`` publishes its message and saves its
  record in one round trip, and how a busy worker's records, acks and lease renewals share
  round trips.
* **blocking connections**, one per fetch in progress, for ``BLPOP`` + claim
  (:meth:`RedisClient.blocking`); written at the end of the turn, so that the first command of
  the work a fetch just handed out reaches the server before the next fetch;
* the storage's reply subscription (:class:`~qtasks_redis.subscriber.Subscriber`), if it waits.

A lost connection fails the commands in flight with :class:`RedisUnavailable` (the worker
retries them with backoff); the next command reconnects. A Lua script the server does not know
(``NOSCRIPT``: a new or restarted server) is loaded and the command sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from qtasks.errors import ConfigError
from qtasks.log import get_logger
from qtasks.registry import mask_url
from redis.asyncio import ConnectionPool
from redis.exceptions import AuthenticationError

from qtasks_redis.connection import Command, Convert, Entry, Pipe, RedisUnavailable, open_pipe, part
from qtasks_redis.keys import Keys
from qtasks_redis.scripts import NAMES, Script, script

DEFAULT_URL = "redis://localhost:6379/0"
#: A command whose connection was lost is sent again on a new one this often at most (every
#: command qtasks sends is safe to repeat: settlements are fenced by their lease token, saves
#: follow the save rules, and a repeated publish is at worst a duplicate: at least once).
RESENDS = 3
#: Once connected, a lost server is waited for this long before commands fail.
RECONNECT_FOR = 3.0
#: Longest pause between two connection attempts: once the server is back, leases must be
#: renewed before they lapse.
RECONNECT_PAUSE = 0.2
#: At start, a server that refuses connections is tried this long before the start fails.
STARTUP_WAIT = 3.0

log = get_logger("qtasks.redis")

__all__ = ["RedisClient", "RedisUnavailable", "evalsha", "split_url"]


def split_url(url: str | None) -> tuple[str, str]:
    """The URL for redis-py and the key prefix (``?prefix=...``, default ``qtasks``)."""
    url = url or DEFAULT_URL
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(k == "prefix" for k, _ in query):
        return url, "qtasks"
    prefix = next(v for k, v in query if k == "prefix")
    if not prefix:
        raise ConfigError(f"empty key prefix in Redis URL {mask_url(url)!r}")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{rest}" if rest else ""), prefix


def refused_us(exc: BaseException) -> bool:
    """Whether the server turned us away for good (credentials, ACL, a certificate we do not
    trust) rather than being away: no point in trying again."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, AuthenticationError | ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def connection_factory(url: str) -> ConnectionPool:
    """redis-py's pool, used only to open connections configured from ``url``."""
    tcp = {"socket_keepalive": True} if not url.startswith("unix:") else {}
    try:
        factory = ConnectionPool.from_url(url, **tcp)
    except (ValueError, TypeError) as exc:
        secret = urlsplit(url).password
        reason = str(exc).replace(secret, "***") if secret else str(exc)
        raise ConfigError(f"bad Redis URL {mask_url(url)!r}: {reason}") from None
    factory.connection_kwargs["protocol"] = 2  # the replies are read as RESP2, whatever the URL says
    return factory


class RedisClient:
    """Connections to one server, opened by the first user and closed by the last.

    :param url: ``redis://``, ``rediss://`` or ``unix://`` URL, as redis-py reads it, plus an
        optional ``prefix`` query parameter for the key names.
    """

    def __init__(self, url: str | None) -> None:
        self.url, prefix = split_url(url)
        self.shown = mask_url(self.url)
        self.keys = Keys(prefix)
        self._factory = connection_factory(self.url)
        self._pipe: Pipe | None = None
        self._pending: list[Entry] = []  # while connecting
        self._connected_once = False
        self._connecting: asyncio.Task[None] | None = None
        self._loading: asyncio.Future[list[Any]] | None = None
        self._blocking: list[_Blocking] = []
        self._users = 0

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        """Connect and load the scripts; a clear :class:`RedisUnavailable` if that fails.

        A server that refuses connections is tried again for up to STARTUP_WAIT seconds (it may
        be restarting along with the worker); one that refuses us (authentication, ACL) is not.
        """
        self._users += 1
        if self._users > 1:
            return
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + STARTUP_WAIT, 0.1
        while True:
            try:
                await asyncio.gather(self.call("PING"), self.load_scripts())
                return
            except BaseException as exc:
                await self._shutdown()
                retry = isinstance(exc, RedisUnavailable) and not refused_us(exc)
                if retry and loop.time() + pause < deadline:
                    log.warning("redis.unavailable", url=self.shown, error=str(exc), retry_in=pause)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 1.0)
                    continue
                self._users -= 1
                if isinstance(exc, RedisUnavailable) or not isinstance(exc, Exception):
                    raise
                raise RedisUnavailable(f"cannot use Redis at {self.shown}: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        self._users -= 1
        if self._users <= 0:
            self._users = 0
            await self._shutdown()

    async def _shutdown(self) -> None:
        self._fail_pending(RedisUnavailable(f"connection to {self.shown} closed"))
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        blocking, self._blocking = self._blocking, []
        for conn in blocking:
            conn.close()

    async def connect(self, on_push: Callable[[Any], None] | None = None, eager: bool = True) -> Pipe:
        """A new connection of its own (for blocking commands or a subscription)."""
        return await open_pipe(self._factory, self.shown, on_push, eager)

    # ------------------------------------------------------------------ pipelined commands

    def call(self, *args: Any, convert: Convert = None) -> asyncio.Future[Any]:
        """Issue a command on the shared connection; the future gets its reply, passed through
        ``convert`` if given.

        An error reply is raised as :class:`redis.exceptions.ResponseError`; a server that
        stays unreachable as :class:`RedisUnavailable`. The future is an ``asyncio.Future``:
        ``asyncio.gather`` takes it as it is, without a task.
        """
        pipe = self._pipe
        if pipe is not None and pipe.alive:
            return pipe.send(*args, convert=convert)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue((args, fut, 0, convert))
        return fut

    def group(self, commands: Sequence[Command], convert: Convert = None) -> asyncio.Future[Any]:
        """Issue ``commands`` in order, with one future for them all: the first error reply, or
        else the last command's reply (passed through ``convert``)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        *first, last = commands
        entries = [*((args, fut, 0, part) for args in first), (last, fut, 0, convert)]
        pipe = self._pipe
        if pipe is not None and pipe.alive:
            pipe.resend(*entries)  # the group leaves in one write
        else:
            for entry in entries:
                self._queue(entry)
        return fut

    def script(
        self, name: str, keys: Sequence[str], args: Sequence[Any], convert: Convert = None
    ) -> asyncio.Future[Any]:
        """Run a script of :mod:`qtasks_redis.scripts` (``EVALSHA``) on the shared connection."""
        return self.call(*evalsha(script(name), keys, args), convert=convert)

    def _queue(self, entry: Entry) -> None:
        self._pending.append(entry)
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Connect, waiting up to RECONNECT_FOR for a server that was there before, and send
        what queued up meanwhile; if that fails, fail it."""
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + (RECONNECT_FOR if self._connected_once else 0.0), 0.05
        try:
            while True:
                try:
                    pipe = await self.connect()
                    break
                except RedisUnavailable as exc:
                    if loop.time() + pause > deadline:
                        self._fail_pending(exc)
                        return
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RECONNECT_PAUSE)
        except BaseException as exc:
            self._fail_pending(RedisUnavailable(f"{self.shown}: {exc!r}"))
            raise
        finally:
            self._connecting = None
        self._connected_once = True
        pipe.on_unknown_script = self._retry_unknown_script
        pipe.on_lost = self._resend
        self._pipe = pipe
        pending, self._pending = self._pending, []
        for entry in pending:
            if not entry[1].done():
                pipe.resend(entry)

    def _fail_pending(self, error: RedisUnavailable) -> None:
        pending, self._pending = self._pending, []
        for entry in pending:
            if not entry[1].done():
                entry[1].set_exception(error)

    def _resend(self, entries: list[Entry], error: RedisUnavailable) -> None:
        """The shared connection was lost with these commands in flight: send them again."""
        for args, fut, attempt, convert in entries:
            if fut.done():
                continue
            if attempt >= RESENDS or self._users == 0:
                fut.set_exception(error)
            else:
                self._queue((args, fut, attempt + 1, convert))

    async def load_scripts(self) -> None:
        """``SCRIPT LOAD`` every script (once at a time, however many callers ask)."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(
                asyncio.gather(*(self.call("SCRIPT", "LOAD", script(name).source) for name in NAMES))
            )
        loading = self._loading
        try:
            await asyncio.shield(loading)
        finally:
            if self._loading is loading and loading.done():
                self._loading = None

    def _retry_unknown_script(self, entry: Entry) -> None:
        """A ``NOSCRIPT`` reply: load the scripts, send the command again, reply to its future."""
        args, fut, _, convert = entry

        async def again() -> None:
            try:
                await self.load_scripts()
                result = await self.call(*args, convert=convert)
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
                return
            if not fut.done():
                fut.set_result(result)

        asyncio.get_running_loop().create_task(again())

    # ------------------------------------------------------------------ blocking commands

    async def blocking(
        self,
        commands: Sequence[Command],
        timeout: float,
        on_cancel: Callable[[list[Any]], Awaitable[None]],
    ) -> list[Any]:
        """Send ``commands`` (the first may block up to ``timeout`` s) on a connection of their own.

        Error replies come back as values. If the caller is cancelled meanwhile, the server is
        told to end the blocking command (``CLIENT UNBLOCK``), the rest still runs, and
        ``on_cancel`` gets the replies (to give back whatever they took) before the
        cancellation goes on.
        """
        conn = self._blocking.pop() if self._blocking else _Blocking(self)
        try:
            return await conn.run(commands, timeout)
        except asyncio.CancelledError:
            replies = await conn.unblock(self)
            if replies is not None:
                await on_cancel(replies)
            raise
        except TimeoutError:
            conn.close()
            raise RedisUnavailable(f"no reply from Redis at {self.shown} in {timeout + 10:.0f} s") from None
        finally:
            self._blocking.append(conn)


class _Blocking:
    """A connection for blocking commands, with its server-side id (for ``CLIENT UNBLOCK``)."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self._pipe: Pipe | None = None
        self._client_id: int | None = None
        self._inflight: list[asyncio.Future[Any]] = []

    async def run(self, commands: Sequence[Command], timeout: float) -> list[Any]:
        if self._pipe is None or not self._pipe.alive:
            # not eager: a fetch is issued as soon as the worker got work, and the first command
            # of that work (its record) should reach the server first
            self._pipe = await self._client.connect(eager=False)
            found = await _settled(self._pipe.send("CLIENT", "ID"))
            self._client_id = found if isinstance(found, int) else None
        # Replies come in order: the last one's arrival means all have come. It wakes the fetch
        # (True) right from the reply parser (``convert``), or, failed, from a done callback. The
        # commands' own futures are never cancelled: unblock() may still want the replies.
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()

        def arrived(reply: Any, came: bool = True) -> Any:
            if not done.done():
                done.set_result(came)
            return reply

        *first, last = commands
        inflight = self._inflight = [
            *(self._pipe.send(*args) for args in first),
            self._pipe.send(*last, convert=arrived),
        ]
        inflight[-1].add_done_callback(lambda _: arrived(None))
        # a peer that vanished without closing the socket: False after that long (a timer handle
        # costs half as much as asyncio.timeout, on every fetch)
        guard = loop.call_later(timeout + 10.0, arrived, None, False)
        try:
            if not await done:
                raise TimeoutError
        finally:
            guard.cancel()
        replies = [f.exception() or f.result() for f in inflight]
        lost = next((r for r in replies if isinstance(r, RedisUnavailable)), None)
        if lost is not None:
            raise lost
        return replies

    async def unblock(self, client: RedisClient) -> list[Any] | None:
        """End the blocked command now; the replies, or None if they did not come."""
        inflight = self._inflight
        for _ in range(40):
            if all(f.done() for f in inflight):
                break
            if self._client_id is not None:
                with contextlib.suppress(Exception):
                    await client.call("CLIENT", "UNBLOCK", self._client_id)
            await asyncio.wait(inflight, timeout=0.05)
        if all(f.done() and not f.cancelled() for f in inflight):
            replies = [f.exception() or f.result() for f in inflight]
            if not any(isinstance(r, RedisUnavailable) for r in replies):
                return replies
        self.close()  # anything it took comes back when its lease lapses
        return None

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None


async def _settled(fut: asyncio.Future[Any]) -> Any:
    """The future's result, or its exception as a value."""
    await asyncio.wait([fut])
    return fut.exception() or fut.result()


def evalsha(found: Script, keys: Sequence[str], args: Sequence[Any]) -> Command:
    return ("EVALSHA", found.sha, len(keys), *keys, *args)
