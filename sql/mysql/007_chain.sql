-- The tamper-evident log (docs/chain.md). Each event's hash covers its id, its predecessor's hash
-- and everything stored of it; signature is Ed25519 over the hash when the server signs. A deleted
-- event stays as a tombstone (tombstone = 1, hashes kept, everything else cleared) so that the chain
-- still verifies; reads skip tombstones. Existing rows get their hashes from `eventsdb migrate`
-- (EventRepository.backfillChain), in pages; NULL until then.
-- event_sequence.last_hash is the hash of the event with id last_id, written under the same row
-- lock as the id reservation, so the chain stays one chain with several writer processes.
-- event_sequence.deletions counts DELETEs (each bumps it under the same lock): a process that plans
-- appends from what it last saw (its own last append, the subjects' last events) checks both
-- last_id and deletions to know that nothing changed since.
ALTER TABLE events
  ADD COLUMN hash BINARY(32) NULL,
  ADD COLUMN prev_hash BINARY(32) NULL,
  ADD COLUMN signature VARBINARY(64) NULL,
  ADD COLUMN tombstone TINYINT NOT NULL DEFAULT 0;
ALTER TABLE event_sequence
  ADD COLUMN last_hash BINARY(32) NULL,
  ADD COLUMN deletions BIGINT UNSIGNED NOT NULL DEFAULT 0;
