-- Browser sessions (POST /auth/session): kept in the database so they survive restarts and work
-- on every server process. Only a hash of the cookie is stored; token_name links to the token
-- (auth file or AUTH_TOKEN), so revoking the token ends its sessions.
CREATE TABLE IF NOT EXISTS eventsdb_sessions (
  id_hash CHAR(64) CHARACTER SET ascii NOT NULL,
  token_name VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  expires_at BIGINT NOT NULL,
  PRIMARY KEY (id_hash),
  KEY eventsdb_sessions_expires (expires_at)
) ENGINE = InnoDB;
