-- Mirrors migrations/sqlite/0005_link_row_group.sql.
-- The Parquet row group of a task's row (Label Studio's `row_group` link
-- column); NULL for tasks of other files. `row_index` stays the row's
-- number in the whole file, so the dedupe index is unchanged.
ALTER TABLE storage_links ADD COLUMN row_group BIGINT;
