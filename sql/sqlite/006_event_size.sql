-- Each event's size in bytes; see sql/mysql/006_event_size.sql. SQLite adds generated columns only
-- as VIRTUAL: computed when read, and length() of a BLOB reads its length, not its pages.
ALTER TABLE events ADD COLUMN event_size INTEGER GENERATED ALWAYS AS (length(data) + coalesce(length(CAST(extensions AS BLOB)), 0)) VIRTUAL;
