-- The tamper-evident log; see sql/mysql/007_chain.sql.
ALTER TABLE events ADD COLUMN hash BLOB NULL;
ALTER TABLE events ADD COLUMN prev_hash BLOB NULL;
ALTER TABLE events ADD COLUMN signature BLOB NULL;
ALTER TABLE events ADD COLUMN tombstone INTEGER NOT NULL DEFAULT 0;
ALTER TABLE event_sequence ADD COLUMN last_hash BLOB NULL;
ALTER TABLE event_sequence ADD COLUMN deletions INTEGER NOT NULL DEFAULT 0;
