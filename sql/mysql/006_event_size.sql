-- Each event's size in bytes (its data and extension attributes), kept in the row so that a read
-- can bound a page in bytes before it fetches any data (EventRepository.page): a 1 MiB event costs
-- four bytes to weigh instead of a megabyte to fetch. A stored generated column: this migration
-- fills it in for existing rows, and every INSERT (older processes' included) keeps it right.
-- The subject index carries it too, so weighing one subject's next page reads that index alone.
ALTER TABLE events
  ADD COLUMN event_size INT UNSIGNED AS (LENGTH(data) + COALESCE(LENGTH(extensions), 0)) STORED,
  DROP INDEX events_subject_id,
  ADD INDEX events_subject_id (subject, id, event_size);
