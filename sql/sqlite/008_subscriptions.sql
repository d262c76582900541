-- Push subscriptions; see sql/mysql/008_subscriptions.sql.
CREATE TABLE IF NOT EXISTS eventsdb_subscriptions (
  id TEXT NOT NULL PRIMARY KEY,
  owner TEXT NOT NULL,
  owner_scopes TEXT NOT NULL,
  spec TEXT NOT NULL,
  generation INTEGER NOT NULL DEFAULT 1,
  position INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL DEFAULT 'active',
  parked_reason TEXT NULL,
  parked_event_id INTEGER NULL,
  parked_at INTEGER NULL,
  validated_sink TEXT NULL,
  validated_rate INTEGER NULL,
  lease_token TEXT NULL,
  lease_holder TEXT NULL,
  lease_expires_at INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS eventsdb_subscriptions_lease ON eventsdb_subscriptions (state, lease_expires_at);
