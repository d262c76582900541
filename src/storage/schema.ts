import type { ColumnType } from "kysely";

/** Row of `events` as both dialects hand it over (drivers differ in number and JSON decoding). */
export interface EventsTable {
  id: ColumnType<number | string | bigint, number, never>;
  source: string;
  type: string;
  subject: string;
  ce_id: string | null;
  /** MySQL DATETIME(6) as `YYYY-MM-DD hh:mm:ss.ffffff`; SQLite canonical RFC 3339 text. */
  time: string;
  datacontenttype: string | null;
  dataschema: string | null;
  /** JSON text on insert; MySQL may hand back a parsed object. */
  extensions: ColumnType<string | Record<string, unknown> | null, string | null, never>;
  data: Buffer;
}

export interface EventSequenceTable {
  name: string;
  last_id: ColumnType<number | string | bigint, number, number>;
}

export interface MigrationsTable {
  version: number;
  name: string;
  applied_at: string;
}

export interface SessionsTable {
  /** SHA-256 (hex) of the session cookie's value. */
  id_hash: string;
  token_name: string;
  /** Hex of sessionFingerprint(): the token the session was signed in with. */
  token_fingerprint: string;
  /** Epoch milliseconds. */
  expires_at: ColumnType<number | string | bigint, number, number>;
}

export interface Database {
  eventsdb_sessions: SessionsTable;
  events: EventsTable;
  event_sequence: EventSequenceTable;
  eventsdb_migrations: MigrationsTable;
}
