-- Sessions remember the fingerprint of the token they were signed in with; see
-- sql/mysql/005_session_fingerprint.sql. Older sessions cannot be checked: the table is re-created.
DROP TABLE IF EXISTS eventsdb_sessions;
CREATE TABLE IF NOT EXISTS eventsdb_sessions (
  id_hash TEXT NOT NULL PRIMARY KEY,
  token_name TEXT NOT NULL,
  token_fingerprint TEXT NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS eventsdb_sessions_expires ON eventsdb_sessions (expires_at);
CREATE INDEX IF NOT EXISTS eventsdb_sessions_token ON eventsdb_sessions (token_name, token_fingerprint);
