"""One pool per app and URL, shared by the broker and the storage, and the group commit on it.

* **Writes** (publishes, record saves, acks, nacks, lease renewals, dead letters) are gathered
  per event-loop turn and sent as one call of the ``apply`` function
  (:mod:`qtasks_postgres.writes`): however many tasks a process runs, it makes one round trip
  and one transaction per turn. If such a batch fails for one bad write (a queue name with a
  NUL byte, say), its writes are sent again one by one, so only that one fails.
* **Record reads** are gathered the same way into one ``WHERE id = ANY($1)``.
* **Lost connections**: a statement whose connection was lost is run again on a new one,
  waiting up to RECONNECT_FOR seconds for the server (every statement qtasks runs is safe to
  repeat: settlements are fenced by their lease token, saves follow the save rules, and a
  repeated publish is at worst a duplicate, which at-least-once allows). After that the caller
  gets :class:`PostgresUnavailable`, and a worker retries with backoff.
* The **listener** connection (:mod:`qtasks_postgres.listener`) is opened the first time
  something waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg
from qtasks.batching import Coalescer
from qtasks.errors import ConfigError, QtasksError
from qtasks.log import get_logger

from qtasks_postgres import schema, writes
from qtasks_postgres.listener import Listener
from qtasks_postgres.target import Names, Target, schema_fault

T = TypeVar("T")
log = get_logger("qtasks.postgres")

#: At start, a server that refuses connections is tried this long before the start fails.
STARTUP_WAIT = 3.0
#: Once connected, a lost server is waited for this long before a statement fails.
RECONNECT_FOR = 3.0
#: Seconds between two sweeps of expired records and dead letters (per process).
SWEEP_EVERY = 60.0
#: A statement that takes longer than this fails (and is run again on a new connection).
COMMAND_TIMEOUT = 30.0
#: The server settings of qtasks' connections: its statements are small and indexed, so no JIT, and one
#: plan per statement (planning a claim costs as much as running it).
SERVER_SETTINGS = {"jit": "off", "plan_cache_mode": "force_generic_plan"}


class PostgresUnavailable(QtasksError, ConnectionError):
    """PostgreSQL cannot be reached (or refused us); the message names the URL, password masked."""


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection or the server is gone (run the statement again)."""
    return isinstance(
        exc,
        OSError  # refused, reset, timed out
        | asyncpg.PostgresConnectionError  # connection does not exist, connection failure
        | asyncpg.CannotConnectNowError  # starting up, shutting down
        | asyncpg.AdminShutdownError
        | asyncpg.CrashShutdownError
        | asyncpg.InternalClientError,  # the protocol is confused: a connection killed mid-message
    ) or (isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc))


class _Failed:
    """A write that failed alone: its caller gets the error, the others of its batch do not."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class Database:
    """The pool, the listener and the group commit of one app and URL; opened by the first of
    the broker and the storage to start, closed by the last to stop."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.shown = target.shown
        self.names = Names(target.schema or "public", target.prefix)
        self.sql = schema.Statements(self.names)
        self.listener = Listener(self._connect, self.shown)
        self._pool: asyncpg.Pool | None = None
        self._users = 0
        self._writes: Coalescer[writes.Write, Any] = Coalescer(self._flush)
        self._reads: Coalescer[str, bytes | None] = Coalescer(self._read)
        self._swept = -SWEEP_EVERY
        self._background: set[asyncio.Task[Any]] = set()
        #: Whether the app's task records are in this database under these names (the storage
        #: shares this pool): the claim then tells which deliveries are fresh.
        self.holds_records = False

    # ------------------------------------------------------------------ life

    async def open(self) -> None:
        """Connect and create the schema if it is missing; a clear error if that fails.

        A server that refuses connections is tried again for up to STARTUP_WAIT seconds (it may be
        starting along with the worker); one that refuses us (password, database) is not.
        """
        self._users += 1
        if self._users > 1:
            return
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + STARTUP_WAIT, 0.1
        try:
            self._pool = await asyncpg.create_pool(
                self.target.dsn,
                min_size=0,  # connect on demand: no background reconnecting (and logging) while the server is away
                max_size=self.target.pool_size,
                timeout=10.0,
                command_timeout=COMMAND_TIMEOUT,
                server_settings=SERVER_SETTINGS,
                reset=_keep_session,
            )
            while True:
                try:
                    async with self._pool.acquire() as conn:
                        await self._prepare(conn)
                    return
                except Exception as exc:
                    if not lost_connection(exc) or loop.time() + pause > deadline:
                        raise
                    log.warning("postgres.unavailable", url=self.shown, error=str(exc), retry_in=pause)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 1.0)
        except BaseException as exc:
            self._users -= 1
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError | ValueError | TypeError):
                raise self._explain(exc) from exc
            raise

    async def _prepare(self, conn: Any) -> None:
        """Settle the schema (``?schema=``, else the connection's current one) and create the tables."""
        name = self.target.schema or await conn.fetchval("SELECT current_schema()")
        if name is None or (fault := schema_fault(name)):
            raise ConfigError(
                f"PostgreSQL at {self.shown}: the current schema is {name!r}; name one for qtasks' tables "
                f"with ?schema=... ({fault or 'lowercase letters, digits and _'})"
            )
        if name != self.names.schema:
            self.names = Names(name, self.target.prefix)
            self.sql = schema.Statements(self.names)
        await schema.ensure(conn, self.names, create_schema=self.target.schema is not None)

    def _explain(self, exc: Exception) -> Exception:
        """The start-up failure as an error that names the URL, never the password."""
        reason = f"{type(exc).__name__}: {exc}"
        secret = _password(self.target.dsn)
        if secret:
            reason = reason.replace(secret, "***")
        if isinstance(exc, asyncpg.ClientConfigurationError | ValueError | TypeError):
            return ConfigError(f"bad PostgreSQL URL {self.shown!r}: {reason}")
        if lost_connection(exc):
            return PostgresUnavailable(f"cannot connect to PostgreSQL at {self.shown}: {reason}")
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
            return PostgresUnavailable(f"PostgreSQL at {self.shown} refused the login: {reason}")
        return PostgresUnavailable(f"cannot use PostgreSQL at {self.shown}: {reason}")

    async def _connect(self) -> Any:
        """A connection of its own, outside the pool (the listener's)."""
        return await asyncpg.connect(self.target.dsn, timeout=10.0, server_settings=SERVER_SETTINGS)

    async def close(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        self._users = 0
        await self.listener.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except (TimeoutError, asyncpg.InterfaceError):
                pool.terminate()

    # ------------------------------------------------------------------ statements

    async def run(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """``await work(connection)`` on a pooled connection; run again on a new connection if
        the connection is lost, for up to RECONNECT_FOR seconds."""
        loop = asyncio.get_running_loop()
        deadline, pause = None, 0.05
        while True:
            pool = self._pool
            if pool is None:
                raise PostgresUnavailable(f"connection to PostgreSQL at {self.shown} closed")
            try:
                async with pool.acquire() as conn:
                    try:
                        return await work(conn)
                    except Exception as exc:
                        if lost_connection(exc):
                            with contextlib.suppress(asyncpg.InterfaceError):  # released already
                                conn.terminate()  # never handed out again: the pool makes a new one
                        raise
            except Exception as exc:
                if not lost_connection(exc):
                    raise
                now = loop.time()
                deadline = deadline or now + RECONNECT_FOR
                if now + pause > deadline:
                    raise PostgresUnavailable(f"lost PostgreSQL at {self.shown}: {type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self.run(lambda conn: conn.fetch(sql, *args))
        return rows

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.run(lambda conn: conn.fetchval(sql, *args))

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; how many rows it changed."""
        status: str = await self.run(lambda conn: conn.execute(sql, *args))
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    # ------------------------------------------------------------------ group commit

    async def write(self, write: writes.Write) -> Any:
        """Apply one write with the others of this event-loop turn; a save returns whether it
        was written, an extend whether the lease was renewed."""
        result = await self._writes.submit(write)
        if isinstance(result, _Failed):
            raise result.error
        return result

    async def _flush(self, batch: list[writes.Write]) -> list[Any]:
        self._maybe_sweep()
        out: list[Any] = []
        for part in writes.rounds(batch):
            try:
                out += await self._apply(part)
            except Exception as exc:
                if lost_connection(exc) or isinstance(exc, PostgresUnavailable) or len(part) == 1:
                    raise
                out += [await self._alone(write) for write in part]  # one bad write must not fail the others
        return out

    async def _alone(self, write: writes.Write) -> Any:
        try:
            return (await self._apply([write]))[0]
        except Exception as exc:
            if lost_connection(exc) or isinstance(exc, PostgresUnavailable):
                raise
            return _Failed(exc)

    async def _apply(self, part: list[writes.Write]) -> list[bool | None]:
        """One call of the apply function (``part`` is one of ``writes.rounds``)."""
        row = await self.run(lambda conn: conn.fetchrow(self.sql.apply, *writes.arguments(part)))
        return writes.results(part, row["saved"], row["extended"])

    async def read(self, task_id: str) -> bytes | None:
        """A record's data (None if there is none), read with the others of this turn."""
        return await self._reads.submit(task_id)

    async def _read(self, ids: list[str]) -> list[bytes | None]:
        rows = await self.fetch(self.sql.get, list(set(ids)))
        found = {row["id"]: row["data"] for row in rows}
        return [found.get(task_id) for task_id in ids]

    def _maybe_sweep(self) -> None:
        """Delete expired records and dead letters, once a minute, in the background."""
        now = asyncio.get_running_loop().time()
        if now - self._swept < SWEEP_EVERY:
            return
        self._swept = now

        async def sweep() -> None:
            try:
                await self.fetchval(self.sql.sweep)
            except Exception as exc:
                log.warning("postgres.sweep_failed", url=self.shown, error=f"{type(exc).__name__}: {exc}")

        task = asyncio.get_running_loop().create_task(sweep())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def _keep_session(_conn: Any) -> None:
    """A released connection needs no reset: qtasks changes no session state on pooled
    connections (no SET, LISTEN, cursor or session lock; asyncpg still rolls back an open
    transaction), and the default reset would cost a round trip per statement."""


def _password(dsn: str) -> str | None:
    """The password in ``dsn``, to be kept out of error messages."""
    try:
        secret = urlsplit(dsn).password
    except ValueError:
        return None
    return unquote(secret) if secret else None
