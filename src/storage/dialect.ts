import type { CompiledQuery, Insertable, Kysely } from "kysely";
import type { Database, EventsTable } from "./schema.js";

/** A row to append; the dialect assigns its id. */
export type NewRow = Omit<Insertable<EventsTable>, "id">;

/**
 * A row's values in the column order both dialects insert them: source, type, subject, ce_id,
 * time, datacontenttype, dataschema, extensions, data (after the id).
 */
export function rowValues(row: NewRow): unknown[] {
  return [
    row.source,
    row.type,
    row.subject,
    row.ce_id ?? null,
    row.time,
    row.datacontenttype ?? null,
    row.dataschema ?? null,
    row.extensions ?? null,
    row.data,
  ];
}

/**
 * What differs between the storage engines; everything else is one Kysely query in repository.ts.
 * One small file per engine implements it (mysql.ts, sqlite.ts).
 */
export interface StorageDialect {
  readonly name: "mysql" | "sqlite";
  readonly db: Kysely<Database>;
  /** Whether the event loop is free while a commit is in flight (a network round trip), or blocked. */
  readonly commitsOffLoop: boolean;
  /**
   * One append transaction: reserves rows.length ids from event_sequence (whose row lock orders
   * concurrent writers, also across processes, until COMMIT), inserts the rows with consecutive ids
   * in order, commits, and returns the first id.
   */
  insertEvents(rows: readonly NewRow[]): Promise<number>;
  /**
   * An append that depends on what is stored (preconditions), in one transaction: takes the lock
   * that orders appends (the event_sequence row, held until COMMIT) first, then runs `reads`, which
   * see every append committed before; passes the last id allocated and each read's rows to
   * `choose`, inserts the rows it returns with ids lastId + 1, lastId + 2… in order, and commits
   * (also when it returns none).
   */
  insertChecked(
    reads: readonly CompiledQuery[],
    choose: (lastId: number, results: readonly (readonly Record<string, unknown>[])[]) => readonly NewRow[],
  ): Promise<void>;
  /** Runs `fn` holding a lock that serializes migrations across processes. */
  withMigrationLock<T>(fn: () => Promise<T>): Promise<T>;
  /** Runs one migration file's statements. */
  runScript(sql: string): Promise<void>;
  /** Index hint for one subject's pages (`FORCE INDEX (…)`), or "" to leave it to the planner. */
  readonly subjectIndexHint: string;
  /** Stored time text → canonical RFC 3339; canonical → stored text. */
  readTime(value: string): string;
  writeTime(canonical: string): string;
  /** True for a unique-key violation (a concurrent append of the same (source, id)). */
  isDuplicateKey(error: unknown): boolean;
  /** Current pool usage for metrics and /readyz. */
  poolStats(): { used: number; idle: number; size: number };
  close(): Promise<void>;
}
