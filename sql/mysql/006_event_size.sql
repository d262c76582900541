-- Each event's size in bytes (its data and extension attributes), kept in the row so that a read
-- can bound a page in bytes before it fetches any data (EventRepository.page): a 1 MiB event costs
-- four bytes to weigh instead of a megabyte to fetch. A stored generated column: this migration
-- fills it in for existing rows, and every INSERT (older processes' included) keeps it right.
ALTER TABLE events ADD COLUMN event_size INT UNSIGNED AS (LENGTH(data) + COALESCE(LENGTH(extensions), 0)) STORED;
