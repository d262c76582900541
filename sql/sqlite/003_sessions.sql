-- Browser sessions; see sql/mysql/003_sessions.sql.
CREATE TABLE IF NOT EXISTS eventsdb_sessions (
  id_hash TEXT NOT NULL PRIMARY KEY,
  token_name TEXT NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS eventsdb_sessions_expires ON eventsdb_sessions (expires_at);
