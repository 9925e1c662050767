"""``sqlite``: broker and storage in one SQLite file; many processes, no server. The default.

URLs follow SQLAlchemy: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``; the
bare name ``sqlite`` uses ``Config.sqlite_path`` (``./qtasks.db``).

An app's broker and storage on one file share its connection (:mod:`qtasks.builtin.sqlite_db`).
A worker waiting for messages and a caller waiting for a result are woken when the row is
committed (:mod:`qtasks.builtin.wakeup`); without Unix sockets they poll every 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from qtasks.builtin.sqlite_db import Database, transaction
from qtasks.builtin.wakeup import Wakeup
from qtasks.hookspecs import hookimpl
from qtasks.messages import FINAL, Record
from qtasks.protocols import DEAD_LETTER, DELAY, LEASE, PRIORITY, DeadLetter, Envelope
from qtasks.registry import ComponentRequest, Registry

_FINAL = tuple(s.value for s in FINAL)
#: Added to a row's priority while it waits for a time (delayed, or nacked with a delay), taken
#: off by the first claim that finds it due: a claim walking the priority index then never walks
#: past rows that wait, and finds those that fell due through the partial index below. Priorities
#: are kept within +-WAITS (publish clamps them), so a row waits exactly when its priority >= WAITS.
LATER, WAITS = 1 << 40, 1 << 39
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS qtasks_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, priority INTEGER NOT NULL,
    visible_at REAL NOT NULL, body BLOB NOT NULL, token TEXT, count INTEGER NOT NULL DEFAULT 0, task_id TEXT);
CREATE INDEX IF NOT EXISTS qtasks_queue_order ON qtasks_queue (queue, priority, seq);
CREATE INDEX IF NOT EXISTS qtasks_queue_visible ON qtasks_queue (queue, visible_at);
DROP INDEX IF EXISTS qtasks_queue_later;
CREATE INDEX IF NOT EXISTS qtasks_queue_waiting ON qtasks_queue (queue, visible_at) WHERE priority >= {WAITS};
CREATE TABLE IF NOT EXISTS qtasks_dead (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, body BLOB NOT NULL,
    reason TEXT NOT NULL, died_at REAL NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS qtasks_records (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, data BLOB NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS qtasks_records_expiry ON qtasks_records (expires_at);
"""
#: The statements of the hot path, shared with the benchmark's raw-sqlite3 floor.
INSERT = "INSERT INTO qtasks_queue (queue, priority, visible_at, body, task_id) VALUES (?, ?, ?, ?, ?)"
READY = "SELECT count(*) FROM (SELECT 1 FROM qtasks_queue WHERE queue IN ({queues}) AND visible_at <= ? LIMIT ?)"
BACKLOG = 1000  # ready rows (counted by READY) from which a claim walks the priority index
ACK = "DELETE FROM qtasks_queue WHERE seq = ? AND token = ?"
FINAL_OF = f"SELECT id FROM qtasks_records WHERE status IN {_FINAL} AND id IN ({{ids}})"
NACK = (  # a nack with a delay adds LATER (a leased row has its own priority: see DUE); count - 1:
    "UPDATE qtasks_queue SET visible_at = ?, token = NULL, body = coalesce(?, body), priority = priority + ?, "
    "count = count - ? WHERE seq = ? AND token = ?"  # never handed out (a cancelled fetch's claim)
)
# Rows that waited and are due now (found by the partial index): whether there are any, and
# giving them their own priority back.
_DUE_ROWS = f"WHERE queue IN ({{}}) AND priority >= {WAITS} AND visible_at <= ?"
WAITING = f"SELECT 1 FROM qtasks_queue {_DUE_ROWS} LIMIT 1"
DUE = f"UPDATE qtasks_queue SET priority = priority - {LATER} {_DUE_ROWS}"
NEXT_AT = "SELECT min(visible_at) FROM qtasks_queue WHERE queue IN ({})"
EXTEND = "UPDATE qtasks_queue SET visible_at = ? WHERE seq = ? AND token = ?"
BURY = (
    "INSERT INTO qtasks_dead (queue, body, reason, died_at, expires_at) "
    "SELECT queue, body, ?, ?, ? FROM qtasks_queue WHERE seq = ? AND token = ?"
)
SAVE = (
    "INSERT INTO qtasks_records (id, status, data, expires_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET status = excluded.status, data = excluded.data, "
    "expires_at = excluded.expires_at WHERE qtasks_records.expires_at <= ?5 OR (excluded.status != 'new' AND "
    f"qtasks_records.status NOT IN {_FINAL})"
)

SWEEP = "DELETE FROM qtasks_records WHERE id IN (SELECT id FROM qtasks_records WHERE expires_at <= ? LIMIT 10000)"


# The claim of the first `limit` ready rows of `queues` queues, lowest (priority, seq) first.
# Parameters: token, lease deadline, then each queue's name, now and limit, then limit. Each
# queue's rows are read on their own: with a backlog from its (queue, priority, seq) index, whose
# walk stops after the limit (`+visible_at` keeps SQLite off the visible_at index, which would read
# and sort every ready row); else from the visible_at index, which skips delayed and leased rows.
def claim_sql(queues: int, backlog: bool) -> str:
    pick = "SELECT * FROM (SELECT seq, priority FROM qtasks_queue WHERE queue = ? AND {}visible_at <= ? "
    picks = " UNION ALL ".join([pick.format("+" if backlog else "") + "ORDER BY priority, seq LIMIT ?)"] * queues)
    return (
        "UPDATE qtasks_queue SET token = ?, count = count + 1, visible_at = ? WHERE seq IN (SELECT seq FROM "
        f"({picks}) ORDER BY priority, seq LIMIT ?) RETURNING priority, seq, body, count, task_id"
    )


class SqliteDelivery:
    __slots__ = ("_broker", "_seq", "_token", "body", "count", "fresh")

    def __init__(self, broker: SqliteBroker, token: str, seq: int, body: bytes, count: int, fresh: bool) -> None:
        self._broker, self._seq, self._token, self.body, self.count, self.fresh = broker, seq, token, body, count, fresh

    async def ack(self) -> None:
        await self._broker._db.write(_execute, ACK, (self._seq, self._token))

    async def nack(self, delay: float = 0.0, body: bytes | None = None, unclaim: bool = False) -> None:
        args = (time.time() + delay, body, LATER if delay > 0 else 0, int(unclaim), self._seq, self._token)
        await self._broker._db.write(_execute, NACK, args)
        self._broker._notify()

    async def extend(self, lease: float) -> bool:
        cur = await self._broker._db.write(_execute, EXTEND, (time.time() + lease, self._seq, self._token))
        return bool(cur.rowcount == 1)

    @property
    def ack_with(self) -> Callable[[Record, float], Any] | None:
        """Delivery.ack_with, when the records are in this file: the record and the ack in one transaction."""
        storage = self._broker.storage
        return None if storage is None else partial(storage.save, lease=(self._seq, self._token))

    async def dead_letter(self, reason: str) -> None:
        now, lease = time.time(), (self._seq, self._token)
        await self._broker._db.write(_settle, BURY, (reason, now, now + self._broker._dead_ttl, *lease), lease)


def _execute(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
    return conn.execute(sql, args)


# Run `sql`; given a delivery's lease, ack it in the same transaction, whatever `sql` did.
def _settle(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...], lease: tuple[int, str] | None) -> Any:
    cur = conn.execute(sql, args)
    if lease is not None:
        conn.execute(ACK, lease)
    return cur


class SqliteBroker:
    capabilities = frozenset({PRIORITY, DELAY, LEASE, DEAD_LETTER})

    def __init__(self, path: str, dead_letter_ttl: float) -> None:
        self._db, self._wake, self._dead_ttl = Database(path, SCHEMA), Wakeup(path), dead_letter_ttl
        self._ready: asyncio.Event | None = None
        self._notifying = False
        #: The app's storage when it uses this file and connection: fresh deliveries, ack_with.
        self.storage: SqliteStorage | None = None

    async def start(self) -> None:
        await self._db.run(_add_task_id)  # connect, create the schema, update a file from before task_id

    async def stop(self) -> None:
        self._wake.close()
        self._ready = None
        await self._db.close()

    async def publish(self, envelope: Envelope) -> None:
        at, now = envelope.eta or time.time(), time.time()  # a row that waits gets LATER
        priority = max(1 - WAITS, min(envelope.priority, WAITS - 1)) + LATER * (at > now)
        await self._db.write(_execute, INSERT, (envelope.queue, priority, at, envelope.body, envelope.id))
        self._notify()

    def _notify(self) -> None:
        """Wake waiting fetches, once per event-loop turn however many messages came."""
        if self._ready is not None:
            self._ready.set()  # this instance
        if not self._notifying:
            self._notifying = True
            asyncio.get_running_loop().call_soon(self._notify_others)

    def _notify_others(self) -> None:
        self._notifying = False
        self._wake.notify("queue")  # other instances, any process

    def _claim(
        self, conn: sqlite3.Connection, queues: Sequence[str], limit: int, lease: float, token: str
    ) -> tuple[list[SqliteDelivery], float | None]:
        now, marks = time.time(), ",".join("?" * len(queues))
        if conn.execute(WAITING.format(marks), (*queues, now)).fetchone():  # an UPDATE costs, even of nothing
            conn.execute(DUE.format(marks), (*queues, now))
        (ready,) = conn.execute(READY.format(queues=marks), (*queues, now, BACKLOG)).fetchone()
        picks = [arg for queue in queues for arg in (queue, now, limit)]
        rows = conn.execute(claim_sql(len(queues), ready >= BACKLOG), (token, now + lease, *picks, limit)).fetchall()
        if rows:  # fresh: a first delivery whose task record, in this file, is not final
            firsts = [row[4] for row in rows if row[3] == 1 and row[4] is not None] if self.storage else []
            final = conn.execute(FINAL_OF.format(ids=",".join("?" * len(firsts))), firsts).fetchall() if firsts else []
            fresh = set(firsts).difference(task_id for (task_id,) in final)
            return [SqliteDelivery(self, token, seq, body, n, i in fresh) for _, seq, body, n, i in sorted(rows)], None
        return [], conn.execute(NEXT_AT.format(marks), queues).fetchone()[0]

    async def fetch(self, queues: Sequence[str], limit: int, lease: float, wait: float) -> list[Any]:
        if self._ready is None:
            ready = self._ready = asyncio.Event()
            if not self._wake.listen("queue", lambda _: ready.set()):
                self._ready = None
        deadline = time.monotonic() + wait
        while True:
            if self._ready is not None:
                self._ready.clear()
            token = uuid.uuid4().hex
            job = asyncio.ensure_future(self._db.write(self._claim, queues, limit, lease, token))
            try:
                found, next_at = await asyncio.shield(job)
            except asyncio.CancelledError:
                found, _ = await job  # leased already: hand them straight back
                await asyncio.gather(*(delivery.nack(unclaim=True) for delivery in found))  # never handed out
                raise
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            if next_at is not None:
                left = min(left, next_at - time.time())
            if self._ready is None:
                left = min(left, 0.05)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait() if self._ready else asyncio.sleep(left), max(left, 0.001))

    async def depth(self, queue: str) -> int:
        sql = "SELECT count(*) FROM qtasks_queue WHERE queue = ?"
        return int((await self._db.run(lambda c: c.execute(sql, (queue,)).fetchone()))[0])

    async def purge(self, queue: str) -> int:
        cur = await self._db.write(lambda c: c.execute("DELETE FROM qtasks_queue WHERE queue = ?", (queue,)))
        return int(cur.rowcount)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        def read(conn: sqlite3.Connection) -> list[Any]:
            conn.execute("DELETE FROM qtasks_dead WHERE expires_at <= ?", (time.time(),))
            sql = "SELECT seq, queue, body, reason, died_at FROM qtasks_dead ORDER BY seq LIMIT ?"
            return conn.execute(sql, (limit,)).fetchall()

        rows = await self._db.write(read)
        return [DeadLetter(str(seq), q, body, reason, died) for seq, q, body, reason, died in rows]

    async def purge_dead(self, ids: Sequence[str] | None = None) -> int:
        keys = None if ids is None else [(int(i),) for i in ids if i.isascii() and i.isdigit() and len(i) < 19]
        sql = "DELETE FROM qtasks_dead" + ("" if keys is None else " WHERE seq = ?")
        cur = await self._db.write(lambda c: c.execute(sql) if keys is None else c.executemany(sql, keys))
        return int(cur.rowcount)


class SqliteStorage:
    def __init__(self, path: str, serializer: Any, broker: Any = None) -> None:
        shared = isinstance(broker, SqliteBroker) and broker._db.path == path
        # One connection per file per app: the broker's and the storage's writes then queue on
        # one thread instead of fighting over SQLite's write lock.
        self._db = broker._db if shared else Database(path, SCHEMA)
        self._owns_db = not shared
        if shared:  # the broker then tells fresh deliveries and offers ack_with
            broker.storage = self
        self._wake, self._serializer = Wakeup(path), serializer
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._listening, self._swept = False, 0.0
        self._done: list[str] = []

    async def start(self) -> None:
        await self._db.run(lambda conn: None)

    async def stop(self) -> None:
        self._wake.close()
        self._listening = False
        if self._owns_db:
            await self._db.close()

    async def save(self, record: Record, ttl: float, lease: tuple[int, str] | None = None) -> bool:
        now = time.time()
        if now - self._swept > 60:  # expired records go in the background of some write
            self._swept = now
            await self._db.write(_execute, SWEEP, (now,))
        data = self._serializer.dumps(record.to_dict())
        cur = await self._db.write(_settle, SAVE, (record.id, record.status.value, data, now + ttl, now), lease)
        if (written := bool(cur.rowcount == 1)) and record.status in FINAL:
            self._woken([record.id])
            if not self._done:
                asyncio.get_running_loop().call_soon(self._notify_done)
            self._done.append(record.id)
        return written

    def _notify_done(self) -> None:
        """Tell other processes' waiters which records became final, once per loop turn (b"": all look)."""
        done, self._done = self._done, []
        self._wake.notify("done", "\n".join(done).encode() if len(done) < 500 and "\n" not in "".join(done) else b"")

    async def get(self, task_id: str) -> Record | None:
        sql = "SELECT data FROM qtasks_records WHERE id = ? AND expires_at > ?"
        row = await self._db.run(lambda c: c.execute(sql, (task_id, time.time())).fetchone())
        return Record.from_dict(self._serializer.loads(row[0])) if row else None

    def _woken(self, ids: list[str]) -> None:
        for task_id in ids or list(self._waiters):
            for fut in self._waiters.pop(task_id, ()):
                if not fut.done():
                    fut.set_result(None)

    async def wait(self, task_id: str, timeout: float) -> Record | None:
        if not self._listening:
            self._listening = self._wake.listen("done", lambda d: self._woken(d.decode().split("\n") if d else []))
        deadline = time.monotonic() + timeout
        while True:
            fut = asyncio.get_running_loop().create_future()
            waiters = self._waiters.setdefault(task_id, [])
            waiters.append(fut)  # before reading, so a save in between still wakes us
            try:
                record = await self.get(task_id)
                if record is not None and record.status in FINAL:
                    return record
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                # listening, look again each second anyway: a wake-up sent while our socket was full is lost
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fut, min(left, 1.0 if self._listening else 0.05))
            finally:
                if fut in waiters:
                    waiters.remove(fut)
                if not waiters and self._waiters.get(task_id) is waiters:
                    del self._waiters[task_id]

    async def delete(self, task_id: str) -> bool:
        cur = await self._db.write(lambda c: c.execute("DELETE FROM qtasks_records WHERE id = ?", (task_id,)))
        return bool(cur.rowcount)


def _add_task_id(conn: sqlite3.Connection) -> None:
    # a file from before the task_id column gets it (its queued rows have none: never fresh); on
    # one that has it, the ALTER fails at once ("duplicate column name"), even while it is locked
    with contextlib.suppress(sqlite3.OperationalError):
        transaction(conn, lambda c: c.execute("ALTER TABLE qtasks_queue ADD COLUMN task_id TEXT"), begin=False)


def sqlite_path(request: ComponentRequest) -> str:
    if request.url is None:
        return request.config.sqlite_path
    path = request.url.split("://", 1)[1]
    if not path.startswith("/") or path in ("/", ""):
        raise ValueError(f"bad sqlite URL {request.url!r}: use sqlite:///relative.db or sqlite:////absolute.db")
    return path[1:]


@hookimpl
def qtasks_register_components(registry: Registry) -> None:
    registry.add_broker("sqlite", lambda r: SqliteBroker(sqlite_path(r), r.config.dead_letter_ttl), schemes=("sqlite",))
    registry.add_storage("sqlite", lambda r: SqliteStorage(sqlite_path(r), r.serializer, r.broker), schemes=("sqlite",))
