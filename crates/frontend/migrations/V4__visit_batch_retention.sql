-- How long visit batch ids live, measured on one clock: the database's. Every instance prunes ids
-- older than `keep`, and no statement may store or claim an id older than `send_within` (the
-- statements check it themselves, src/db/connection.rs): a statement the network or a stalled
-- server delivers minutes late must not find its id pruned and store the batch a second time.
-- `keep` must exceed `send_within` by more than a statement can wait between its check and its
-- insert (`statement_timeout`, which the frontend caps at 60 s). One row, shared by every instance,
-- so instances cannot disagree; change it with UPDATE, lowering `send_within` first and `keep` only
-- after the longest statement timeout has passed.
CREATE TABLE IF NOT EXISTS visit_batch_retention (
    one_row     boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    keep        interval NOT NULL DEFAULT '10 minutes',
    send_within interval NOT NULL DEFAULT '5 minutes',
    CHECK (send_within > interval '0' AND keep >= 2 * send_within)
);
INSERT INTO visit_batch_retention DEFAULT VALUES ON CONFLICT DO NOTHING;

-- The smallest UUIDv7 of the millisecond `at` falls in: ids sort by creation time (the frontend's
-- clock), so "created before `at`" is a range on the primary key.
CREATE OR REPLACE FUNCTION visit_batch_id_floor(at timestamptz) RETURNS uuid
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
    AS $$ SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0') || repeat('0', 20))::uuid $$;
