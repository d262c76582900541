-- The event log. Text columns use utf8mb4_bin so subjects, types and (source, id) compare exactly,
-- case included. Ids are assigned by the writer from event_sequence (see 002), not by AUTO_INCREMENT,
-- so that they are strictly increasing in commit order even with several writer processes.
CREATE TABLE IF NOT EXISTS events (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  source VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  type VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  subject VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  ce_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  time DATETIME(6) NOT NULL,
  datacontenttype VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  dataschema VARCHAR(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  extensions JSON NULL,
  data MEDIUMBLOB NOT NULL,
  PRIMARY KEY (id),
  KEY events_subject_id (subject, id),
  KEY events_type_id (type, id),
  UNIQUE KEY events_source_ce_id (source, ce_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
