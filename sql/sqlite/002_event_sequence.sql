-- The id allocator; see sql/mysql/002_event_sequence.sql.
CREATE TABLE IF NOT EXISTS event_sequence (
  name TEXT NOT NULL PRIMARY KEY,
  last_id INTEGER NOT NULL
);
INSERT OR IGNORE INTO event_sequence (name, last_id) SELECT 'events', COALESCE(MAX(id), 0) FROM events;
