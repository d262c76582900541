-- One subject's events of one type, in id order; see sql/mysql/009_subject_type_index.sql.
-- event_size is a VIRTUAL column here (006): the index stays (subject, type, id).
CREATE INDEX IF NOT EXISTS events_subject_type_id ON events (subject, type, id);
