-- Mirrors migrations/sqlite/0002_unfinished_objects.sql.
-- Task files written in several transactions (large files streamed in
-- batches) are listed here from their first batch until their last, so
-- that a sync interrupted in the middle reads them again: their links do
-- not count as "already imported" meanwhile.
CREATE TABLE unfinished_objects (
    storage_id  BIGINT NOT NULL REFERENCES storages (id) ON DELETE CASCADE,
    key         TEXT   NOT NULL,
    PRIMARY KEY (storage_id, key)
);
