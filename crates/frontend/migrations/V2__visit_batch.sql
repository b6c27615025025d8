-- One row per visit batch, written by the same statement as the batch's visits: a batch whose
-- answer was lost is looked up by its id (see src/db/visits.rs). Ids are UUIDv7, so they sort by
-- creation time and old ones are pruned by a range delete on the primary key.
CREATE TABLE IF NOT EXISTS visit_batch (
    id uuid PRIMARY KEY
);
