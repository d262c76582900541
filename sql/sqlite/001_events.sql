-- The event log; see sql/mysql/001_events.sql. SQLite compares TEXT with BINARY collation (exact).
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY,
  source TEXT NOT NULL,
  type TEXT NOT NULL,
  subject TEXT NOT NULL,
  ce_id TEXT NULL,
  time TEXT NOT NULL,
  datacontenttype TEXT NULL,
  dataschema TEXT NULL,
  extensions TEXT NULL,
  data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_subject_id ON events (subject, id);
CREATE INDEX IF NOT EXISTS events_type_id ON events (type, id);
CREATE UNIQUE INDEX IF NOT EXISTS events_source_ce_id ON events (source, ce_id);
