"""The SQL: the schema (``schema.sql``, created on start if missing) and every statement qtasks runs.

The statements are built once per app from its :class:`~qtasks_postgres.target.Names` and are
the same text every time, so asyncpg prepares each once per connection. The benchmark's
asyncpg floor runs these very statements.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from typing import Any

from qtasks.messages import FINAL

from qtasks_postgres.target import Names

#: Bumped whenever schema.sql changes; stored as the comment of the apply function, which is
#: created last, so a matching comment means everything is there. (3: the apply function
#: notifies an id with a newline as '', since the ids of a notification are one per line.)
VERSION = "qtasks-postgres schema 3"
FINAL_SQL = ", ".join(f"'{status.value}'" for status in sorted(FINAL))


def ddl(names: Names) -> str:
    """schema.sql for these names, and the version marker."""
    template = files("qtasks_postgres").joinpath("schema.sql").read_text()
    text = template.format(
        queue=names.queue,
        dead=names.dead,
        records=names.records,
        apply=names.apply,
        published=names.table("published"),
        prefix=names.prefix,
        queue_channel=names.queue_channel,
        done_channel=names.done_channel,
        final=FINAL_SQL,
    )
    return f"{text}\nCOMMENT ON FUNCTION {names.apply} IS '{VERSION}';\n"


def lock_key(names: Names) -> int:
    """The advisory lock that serializes the creation of one app's schema."""
    digest = hashlib.sha256(f"qtasks:{names.schema}.{names.prefix}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def ensure(conn: Any, names: Names, create_schema: bool) -> None:
    """Create the tables and functions unless they are there in this version.

    Many processes start at once: the check is one cheap query, and the creation runs under an
    advisory lock in one transaction, so exactly one of them creates and the others wait.
    """
    check = "SELECT obj_description(to_regproc($1), 'pg_proc') = $2"
    if await conn.fetchval(check, names.apply, VERSION):
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(names))
        if await conn.fetchval(check, names.apply, VERSION):
            return
        if create_schema and await conn.fetchval("SELECT to_regnamespace($1) IS NULL", names.schema):
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {names.schema}")
        await conn.execute(ddl(names))


class Statements:
    """Every statement, for one app's names."""

    def __init__(self, names: Names) -> None:
        queue, dead, records = names.queue, names.dead, names.records
        self.claim = claim_sql(names)
        self.apply = f"SELECT saved, extended FROM {names.apply}({', '.join(f'${i}' for i in range(1, 23))})"
        self.depth = f"SELECT count(*) FROM {queue} WHERE queue = $1"
        self.purge = f"DELETE FROM {queue} WHERE queue = $1"
        self.dead_letters = (
            "SELECT seq, queue, body, reason, extract(epoch FROM died_at)::float8 AS died_at "
            f"FROM {dead} WHERE expires_at > now() ORDER BY seq LIMIT $1"
        )
        self.purge_dead = f"DELETE FROM {dead}"
        self.purge_dead_ids = f"DELETE FROM {dead} WHERE seq = ANY($1::bigint[])"
        self.get = f"SELECT id, data FROM {records} WHERE id = ANY($1::text[]) AND expires_at > now()"
        self.delete = f"DELETE FROM {records} WHERE id = $1"
        #: expired records (10,000 at a time) and dead letters; returns how many went. The outer
        #: DELETE checks the expiry again: a record saved anew while the sweep waited for its row
        #: lock is then skipped (READ COMMITTED reads the new row), not deleted.
        self.sweep = (
            f"WITH gone AS (DELETE FROM {records} WHERE id = ANY(ARRAY("
            f"SELECT id FROM {records} WHERE expires_at <= now() LIMIT 10000)) AND expires_at <= now() "
            "RETURNING 1), "
            f"buried AS (DELETE FROM {dead} WHERE expires_at <= now() RETURNING 1) "
            "SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM buried)"
        )
        #: what a cancelled claim leased ($1 seqs, $2 its token), back as it was before: ready
        #: now, and its count not raised (a nack keeps it), so its next delivery is the first;
        #: wakes the fetches waiting for its queues, as a nack does
        self.unclaim = (
            f"WITH back AS (UPDATE {queue} SET token = NULL, count = greatest(count - 1, 0), visible_at = now() "
            "WHERE seq = ANY($1::bigint[]) AND token = $2 RETURNING queue) "
            f"SELECT pg_notify('{names.queue_channel}', "
            "CASE WHEN octet_length(b.queue) <= 1000 THEN b.queue ELSE '' END) "
            "FROM (SELECT DISTINCT queue FROM back) AS b"
        )


def claim_sql(names: Names) -> str:
    """Lease up to $4 ready messages of the queues $3 for $2 seconds under the token $1; if $5
    (the app's records are in this database), a first delivery whose record is not final is
    marked ``fresh`` (see ``qtasks.protocols.Delivery``).

    Per queue, the lowest (priority, seq) ready rows are read from the ``(queue, priority, seq)``
    index (a LATERAL subquery each, so the scan stops after $4 rows however long the queue) and
    locked ``FOR UPDATE SKIP LOCKED``: concurrent claims never wait for each other nor take the
    same row. ``= ANY(ARRAY(...))`` runs that subquery exactly once (an ``IN (...)`` subquery
    may be run again per row, and with SKIP LOCKED then lease more than the limit). When
    nothing was claimed, one row instead says in how many seconds (by the server's clock) the
    first message of these queues falls due -- a delayed message, or a lease that lapses --
    read from the ``(queue, visible_at)`` index.
    """
    q = names.queue
    return (
        f"WITH claimed AS (UPDATE {q} SET token = $1, count = count + 1, "
        "visible_at = now() + make_interval(secs => $2) "
        "WHERE seq = ANY(ARRAY("
        "SELECT r.seq FROM unnest($3::text[]) AS n(name), "
        f"LATERAL (SELECT seq, priority FROM {q} WHERE queue = n.name AND visible_at <= now() "
        "ORDER BY priority, seq LIMIT $4 FOR UPDATE SKIP LOCKED) AS r "
        "ORDER BY r.priority, r.seq LIMIT $4)) "
        "RETURNING seq, priority, body, count, task_id) "
        "SELECT c.seq, c.priority, c.body, c.count, NULL::float8 AS due_in, "
        "($5::boolean AND c.count = 1 AND c.task_id IS NOT NULL AND NOT EXISTS ("
        f"SELECT 1 FROM {names.records} AS r WHERE r.id = c.task_id AND r.expires_at > now() "
        f"AND r.status IN ({FINAL_SQL}))) AS fresh FROM claimed AS c "
        "UNION ALL "
        "SELECT NULL, NULL, NULL, NULL, extract(epoch FROM min(d.visible_at) - clock_timestamp())::float8, NULL "
        "FROM unnest($3::text[]) AS n(name), "
        f"LATERAL (SELECT visible_at FROM {q} WHERE queue = n.name ORDER BY visible_at LIMIT 1) AS d "
        "HAVING NOT EXISTS (SELECT 1 FROM claimed)"
    )
