-- The tables and functions of one qtasks app, created by the first process that needs them.
-- The names in braces are filled in by qtasks_postgres.schema (validated identifiers only).

-- Messages. A message is ready when visible_at has passed: publishing sets it to now() or to
-- the eta, a claim sets it to the lease deadline (and a fresh token: the lease's fence), a nack
-- to now() + delay (and clears the token).
CREATE TABLE IF NOT EXISTS {queue} (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue      text        NOT NULL,
    priority   integer     NOT NULL DEFAULT 0,
    visible_at timestamptz NOT NULL DEFAULT now(),
    body       bytea       NOT NULL,
    token      uuid,
    count      integer     NOT NULL DEFAULT 0,
    task_id    text        -- the message's task: a claim tells which deliveries are fresh
);
-- tables made by schema 1 (messages published by its workers have no task id: never fresh)
ALTER TABLE {queue} ADD COLUMN IF NOT EXISTS task_id text;
-- the claim: the lowest (priority, seq) of a queue first
CREATE INDEX IF NOT EXISTS {prefix}_queue_order ON {queue} (queue, priority, seq);
-- when nothing is ready: when the next message of a queue falls due
CREATE INDEX IF NOT EXISTS {prefix}_queue_due ON {queue} (queue, visible_at);

CREATE TABLE IF NOT EXISTS {dead} (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue      text        NOT NULL,
    body       bytea       NOT NULL,
    reason     text        NOT NULL,
    died_at    timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS {prefix}_dead_expiry ON {dead} (expires_at);

CREATE TABLE IF NOT EXISTS {records} (
    id         text        PRIMARY KEY,
    status     text        NOT NULL,
    data       bytea       NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS {prefix}_records_expiry ON {records} (expires_at);

-- Every INSERT into the queue table, ours or anyone's, wakes the fetches waiting for its
-- queues: one notification per queue and statement (a name too long for a payload wakes all).
CREATE OR REPLACE FUNCTION {published}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{queue_channel}', CASE WHEN octet_length(i.queue) <= 1000 THEN i.queue ELSE '' END)
    FROM (SELECT DISTINCT queue FROM inserted) AS i;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS {prefix}_published ON {queue};
CREATE TRIGGER {prefix}_published AFTER INSERT ON {queue}
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION {published}();

-- Every write qtasks makes, in one call: what the concurrent tasks of one process asked for in
-- one event-loop turn (group commit), applied in this order, atomically, in one round trip.
--   publish  messages (the trigger above wakes the fetches);
--   save     records by the two save rules: a `new` record is only inserted, and a record whose
--            status is final is never overwritten until it expires; the ids of records that
--            became final are notified, a few hundred per notification, one per line (an id
--            with a newline, or too long for a payload, goes as '': wake every waiter);
--   extend   leases (fenced by the token); the seqs renewed are returned;
--   nack     messages back to their queue after a delay, with a new body if given (fenced);
--   bury     messages into the dead letters with the reason (fenced);
--   ack      messages: delete them (fenced).
-- Returns the ids of the records written and the seqs of the leases renewed.
CREATE OR REPLACE FUNCTION {apply}(
    pub_queue text[], pub_priority integer[], pub_eta float8[], pub_body bytea[], pub_task_id text[],
    save_id text[], save_status text[], save_data bytea[], save_ttl float8[],
    ext_seq bigint[], ext_token uuid[], ext_lease float8[],
    nack_seq bigint[], nack_token uuid[], nack_delay float8[], nack_body bytea[],
    bury_seq bigint[], bury_token uuid[], bury_reason text[], bury_ttl float8[],
    ack_seq bigint[], ack_token uuid[],
    OUT saved text[], OUT extended bigint[]
) LANGUAGE plpgsql AS $$
DECLARE
    finished text[];
    woken text[];
BEGIN
    IF cardinality(pub_queue) > 0 THEN
        INSERT INTO {queue} (queue, priority, visible_at, body, task_id)
        SELECT m.queue, m.priority, coalesce(to_timestamp(m.eta), now()), m.body, m.task_id
        FROM unnest(pub_queue, pub_priority, pub_eta, pub_body, pub_task_id) AS m(queue, priority, eta, body, task_id);
    END IF;

    IF cardinality(save_id) > 0 THEN
        WITH written AS (
            INSERT INTO {records} AS r (id, status, data, expires_at)
            SELECT s.id, s.status, s.data, now() + make_interval(secs => s.ttl)
            FROM unnest(save_id, save_status, save_data, save_ttl) AS s(id, status, data, ttl)
            ON CONFLICT (id) DO UPDATE
                SET status = excluded.status, data = excluded.data, expires_at = excluded.expires_at
                WHERE r.expires_at <= now() OR (excluded.status <> 'new' AND r.status NOT IN ({final}))
            RETURNING r.id, r.status
        )
        SELECT array_agg(w.id), array_agg(w.id) FILTER (WHERE w.status IN ({final}))
        INTO saved, finished FROM written AS w;
        PERFORM pg_notify('{done_channel}', string_agg(c.id, E'\n'))
        FROM (
            SELECT CASE WHEN octet_length(f.id) <= 1000 AND strpos(f.id, E'\n') = 0 THEN f.id ELSE '' END AS id,
                   sum(octet_length(f.id) + 1) OVER (ORDER BY f.n) / 7000 AS chunk
            FROM unnest(finished) WITH ORDINALITY AS f(id, n)
        ) AS c
        GROUP BY c.chunk;
    END IF;

    IF cardinality(ext_seq) > 0 THEN
        WITH renewed AS (
            UPDATE {queue} AS q SET visible_at = now() + make_interval(secs => e.lease)
            FROM unnest(ext_seq, ext_token, ext_lease) AS e(seq, token, lease)
            WHERE q.seq = e.seq AND q.token = e.token
            RETURNING q.seq
        )
        SELECT array_agg(r.seq) INTO extended FROM renewed AS r;
    END IF;

    IF cardinality(nack_seq) > 0 THEN
        WITH back AS (
            UPDATE {queue} AS q
            SET visible_at = now() + make_interval(secs => greatest(n.delay, 0)), token = NULL,
                body = coalesce(n.body, q.body)
            FROM unnest(nack_seq, nack_token, nack_delay, nack_body) AS n(seq, token, delay, body)
            WHERE q.seq = n.seq AND q.token = n.token
            RETURNING q.queue
        )
        SELECT array_agg(DISTINCT b.queue) INTO woken FROM back AS b;
        PERFORM pg_notify('{queue_channel}', CASE WHEN octet_length(w.queue) <= 1000 THEN w.queue ELSE '' END)
        FROM unnest(woken) AS w(queue);
    END IF;

    IF cardinality(bury_seq) > 0 THEN
        WITH gone AS (
            DELETE FROM {queue} AS q
            USING unnest(bury_seq, bury_token, bury_reason, bury_ttl) AS b(seq, token, reason, ttl)
            WHERE q.seq = b.seq AND q.token = b.token
            RETURNING q.queue, q.body, b.reason, b.ttl
        )
        INSERT INTO {dead} (queue, body, reason, expires_at)
        SELECT g.queue, g.body, g.reason, now() + make_interval(secs => g.ttl) FROM gone AS g;
    END IF;

    IF cardinality(ack_seq) > 0 THEN
        DELETE FROM {queue} AS q
        USING unnest(ack_seq, ack_token) AS a(seq, token)
        WHERE q.seq = a.seq AND q.token = a.token;
    END IF;
END
$$;
