-- Sessions remember which token they were signed in with: token_fingerprint (16 bytes of a hash of
-- the token's SHA-256) is compared with the current token of that name on every use, so a session
-- ends when its token's hash changes. Sessions from before this column cannot be checked, so the
-- table is re-created: signed-in browsers sign in once more after the upgrade. DROP + CREATE (not
-- ALTER) so a run interrupted between the two statements can simply run again.
DROP TABLE IF EXISTS eventsdb_sessions;
CREATE TABLE IF NOT EXISTS eventsdb_sessions (
  id_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- Token names are [A-Za-z0-9._-]: ASCII with a binary collation compares them exactly.
  token_name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  token_fingerprint CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  expires_at BIGINT NOT NULL,
  PRIMARY KEY (id_hash),
  KEY eventsdb_sessions_expires (expires_at),
  KEY eventsdb_sessions_token (token_name, token_fingerprint)
) ENGINE = InnoDB;
