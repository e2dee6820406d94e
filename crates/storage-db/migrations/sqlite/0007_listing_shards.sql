-- Mirrored in migrations/postgres/0007_listing_shards.sql.
-- The shards of syncs split by folder (storage_core::shards): one row per
-- part of a running job's listing, claimed with a lease like a job; the
-- rows of a job are removed when it ends.

CREATE TABLE listing_shards (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    storage_id   INTEGER NOT NULL REFERENCES storages (id) ON DELETE CASCADE,
    job          TEXT    NOT NULL,
    -- The folder listed (a store path), or '' for the objects directly
    -- under the prefix.
    folder       TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    -- Claims so far; the last one's worker holds it.
    attempts     INTEGER NOT NULL DEFAULT 0,
    lease_until  TEXT,
    -- Its counters and problems (storage_core::shards::ShardReport).
    report       TEXT    NOT NULL DEFAULT '{}',
    UNIQUE (storage_id, job, folder)
);

CREATE INDEX listing_shards_status ON listing_shards (status);
