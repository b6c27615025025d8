-- Who wrote a batch id: the batch's own statement, with its visits (stored, the default), or
-- the resolver's claim alone (never stored, and now never can be). A claim asked again after its
-- answer was lost must not read its own row as a stored batch (src/db/visits.rs, CLAIM_BATCH).
ALTER TABLE visit_batch ADD COLUMN IF NOT EXISTS stored boolean NOT NULL DEFAULT true;
