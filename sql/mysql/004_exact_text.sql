-- Exact comparison of every text column that is compared. utf8mb4_bin (001, 003) is a PAD SPACE
-- collation on MariaDB and MySQL: 'dup' = 'dup ', so CloudEvents ids differing only in trailing
-- spaces collided in the unique key, and `subject = 'a'` also matched subject 'a '. A NO PAD binary
-- collation compares the bytes as they are. MariaDB names it utf8mb4_nopad_bin; MySQL 8 has no
-- such name, and the migration runner (src/storage/migrate.ts) writes utf8mb4_0900_bin instead.
-- Rebuilds the table once (a copy): on a large events table this takes a while.
ALTER TABLE events
  MODIFY source VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
  MODIFY type VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
  MODIFY subject VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
  MODIFY ce_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NULL,
  MODIFY datacontenttype VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NULL,
  MODIFY dataschema VARCHAR(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NULL,
  DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin;
ALTER TABLE eventsdb_sessions
  MODIFY token_name VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL;
