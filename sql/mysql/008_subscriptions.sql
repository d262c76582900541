-- Push subscriptions (the CloudEvents Subscriptions API, delivered by HTTP web hooks; see
-- src/subscriptions/). One row per subscription:
-- - spec: the subscription as the client set it (JSON, normalized); generation counts its changes,
--   so a deliverer notices a PUT or a redrive and starts over from the row.
-- - owner, owner_scopes: the token that created it and its read scopes then; deliveries are cut to
--   those scopes and to the token's scopes at delivery time.
-- - position: the last event id the sink acknowledged (the checkpoint); delivery resumes after it.
-- - state 'parked' with parked_*: delivery gave up on parked_event_id; a redrive makes it 'active'.
-- - validated_sink, validated_rate: the sink the web hook handshake last succeeded for, and the
--   WebHook-Allowed-Rate it granted (requests per minute; NULL = no limit).
-- - lease_*: which process delivers it (one at a time across processes), until when (epoch ms on
--   the database's clock); a new lease_token per claim fences off a holder that lost its lease.
CREATE TABLE IF NOT EXISTS eventsdb_subscriptions (
  id VARCHAR(64) CHARACTER SET ascii NOT NULL,
  owner VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  owner_scopes MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  spec MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  generation BIGINT NOT NULL DEFAULT 1,
  position BIGINT NOT NULL DEFAULT 0,
  state VARCHAR(16) CHARACTER SET ascii NOT NULL DEFAULT 'active',
  parked_reason TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  parked_event_id BIGINT NULL,
  parked_at BIGINT NULL,
  validated_sink TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  validated_rate INT NULL,
  lease_token VARCHAR(64) CHARACTER SET ascii NULL,
  lease_holder VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  lease_expires_at BIGINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (id),
  KEY eventsdb_subscriptions_lease (state, lease_expires_at)
) ENGINE = InnoDB;
