-- Syncs that follow the bucket compare a storage's linked keys with its
-- listing in byte order (`key COLLATE "C"`), whatever the database's
-- collation; this index serves those range reads. SQLite's default
-- collation is byte order already: its dedupe index serves them.
CREATE INDEX storage_links_key_order ON storage_links (storage_id, key COLLATE "C");
