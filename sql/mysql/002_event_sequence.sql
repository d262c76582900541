-- The id allocator. The writer bumps last_id inside its transaction; the row lock it takes is held
-- until COMMIT, so a second writer (another process) waits and always gets higher ids that commit
-- later. Readers paging by id therefore never see a lower id appear behind their cursor.
CREATE TABLE IF NOT EXISTS event_sequence (
  name VARCHAR(32) NOT NULL,
  last_id BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (name)
) ENGINE = InnoDB;
INSERT IGNORE INTO event_sequence (name, last_id) SELECT 'events', COALESCE(MAX(id), 0) FROM events;
