"""SQLite access for the embedded backend: one connection per file and app, in WAL mode, used from
its own thread so the event loop never blocks, with group commit and a short spin (instead of
SQLite's millisecond sleeps) on a locked file."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from qtasks.batching import Coalescer

T = TypeVar("T")


class Database:
    """``run(fn, ...)`` reads. ``write(fn, ...)`` is group-committed: every write submitted while a
    transaction is running goes into the next one, so concurrent tasks share commits."""

    def __init__(self, path: str, schema: str) -> None:
        self.path, self._schema = path, schema
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="qtasks-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._writes: Coalescer[tuple[Callable[..., Any], tuple[Any, ...]], Any] = Coalescer(self._commit)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            # timeout=0: SQLite's own busy handler sleeps 1 ms and more; ``transaction`` spins
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
            transaction(conn, lambda c: c.execute("PRAGMA journal_mode=WAL"), begin=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            transaction(conn, lambda c: c.executescript(self._schema), begin=False)
            self._conn = conn
        return self._conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(self._connection(), *args))

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        result = await self._writes.submit((fn, args))
        if isinstance(result, _Failed):
            raise result.error
        return result  # type: ignore[no-any-return]

    async def _commit(self, items: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
        def work(conn: sqlite3.Connection) -> list[Any]:
            return [fn(conn, *args) for fn, args in items]

        try:
            return await self.run(lambda conn: transaction(conn, work))
        except OSError:
            raise  # the file stayed locked (see transaction): an outage, for every write alike
        except Exception:  # one bad write must not fail the others: retry them one by one
            return [await self.run(_alone, fn, args) for fn, args in items]

    async def close(self) -> None:
        if self._conn is not None:
            await self.run(lambda conn: conn.close())
            self._conn = None
        self._pool.shutdown(wait=False)


class _Failed:
    def __init__(self, error: Exception) -> None:
        self.error = error


def _alone(conn: sqlite3.Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    try:
        return transaction(conn, lambda c: fn(c, *args))
    except Exception as exc:
        return _Failed(exc)


def transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], begin: bool = True) -> T:
    """Run ``work`` in a write transaction, waiting for another process's write lock by spinning
    briefly (50 µs, growing to 2 ms) rather than SQLite's millisecond sleeps; up to 30 s, then a
    ``TimeoutError``: an outage (an ``OSError``), which the worker retries, not a bad write."""
    pause, deadline = 50e-6, time.monotonic() + 30
    while True:
        try:
            if not begin:
                return work(conn)
            conn.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"SQLite file locked by another writer for 30 s: {exc}") from exc
            time.sleep(pause)
            pause = min(pause * 2, 0.002)
    try:
        result = work(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
