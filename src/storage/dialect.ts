import type { Kysely, Transaction } from "kysely";
import type { Database } from "./schema.js";

/**
 * What differs between the storage engines; everything else is one Kysely query in repository.ts.
 * One small file per engine implements it (mysql.ts, sqlite.ts).
 */
export interface StorageDialect {
  readonly name: "mysql" | "sqlite";
  readonly db: Kysely<Database>;
  /** Reserves `count` ids inside `trx`; returns the last one (ids are last-count+1 … last). */
  allocateIds(trx: Transaction<Database>, count: number): Promise<number>;
  /** Runs `fn` holding a lock that serializes migrations across processes. */
  withMigrationLock<T>(fn: () => Promise<T>): Promise<T>;
  /** Runs one migration file's statements. */
  runScript(sql: string): Promise<void>;
  /** Stored time text → canonical RFC 3339; canonical → stored text. */
  readTime(value: string): string;
  writeTime(canonical: string): string;
  /** True for a unique-key violation (a concurrent append of the same (source, id)). */
  isDuplicateKey(error: unknown): boolean;
  /** Current pool usage for metrics and /readyz. */
  poolStats(): { used: number; idle: number; size: number };
  close(): Promise<void>;
}
