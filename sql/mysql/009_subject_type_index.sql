-- One subject's events of one type, in id order: `GET /events?subject=S&type=T` seeks to
-- (S, T, cursor) and reads only the rows it returns, where the (subject, id) index read every event
-- of the subject to find those of the type (100,085 rows to find none, 346 ms at 5M events). It
-- carries event_size like events_subject_id (006), so weighing such a page reads this index alone.
-- A recursive read with a type reads the subtree's entries of this index, without the rows.
-- Builds the index in place (InnoDB online DDL): appends go on meanwhile, but on a large events
-- table it takes a while.
ALTER TABLE events ADD INDEX events_subject_type_id (subject, type, id, event_size);
