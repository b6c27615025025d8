-- The visits table of the original demo, under its original name and columns.
-- IF NOT EXISTS: a database the original already populated is adopted, not rejected.
CREATE TABLE IF NOT EXISTS access (
    last_update timestamptz NOT NULL,
    user_agent  varchar(250)
);

-- /recent-visits reads the ten newest rows: a backward index scan, flat in table size.
CREATE INDEX IF NOT EXISTS access_last_update_idx ON access (last_update DESC);
