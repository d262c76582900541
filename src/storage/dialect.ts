import type { CompiledQuery, Insertable, Kysely } from "kysely";
import { GENESIS_HASH } from "../events/chain.js";
import type { Database, EventsTable } from "./schema.js";

/** The events indexes a read may force (sql/mysql/001, 006 and 009). */
export type EventsIndex = "events_subject_id" | "events_subject_type_id" | "events_type_id" | "PRIMARY";

/** A row to append; the dialect assigns its id. */
export type NewRow = Omit<Insertable<EventsTable>, "id" | "hash" | "prev_hash" | "signature" | "tombstone">;

/**
 * The store as the lock found it: the last id allocated, that event's hash, and how many DELETEs
 * have run. Two equal states mean nothing was appended or deleted in between.
 */
export interface AppendState {
  readonly lastId: number;
  readonly lastHash: Buffer;
  readonly deletions: number;
}

/** A row to insert with its id and its place in the chain. */
export interface ChainedRow extends NewRow {
  readonly id: number;
  readonly hash: Buffer;
  readonly prev_hash: Buffer;
  readonly signature: Buffer | null;
}

/** Decides an append's rows from the state at the lock and the reads' rows (see StorageDialect.append). */
export type AppendPlanner = (
  state: AppendState,
  results: readonly (readonly Record<string, unknown>[])[],
) => Promise<readonly ChainedRow[]>;

/** Columns every dialect inserts, in order: the id, rowValues(), then the chain. */
export const INSERT_COLUMNS =
  "id, source, type, subject, ce_id, time, datacontenttype, dataschema, extensions, data, hash, prev_hash, signature";

/** The state of a store whose existing events still await their hashes (see backfillChain). */
export class ChainNotBackfilledError extends Error {
  override readonly name = "ChainNotBackfilledError";
  constructor() {
    super("the events stored before the hash chain have no hashes yet: run `eventsdb migrate`");
  }
}

/** The state read under the lock, from event_sequence's row; throws when the store cannot chain. */
export function stateOf(
  row: { last_id?: unknown; last_hash?: unknown; deletions?: unknown } | undefined,
): AppendState {
  if (row === undefined || row.last_id === undefined || row.deletions === undefined) {
    throw new Error("event_sequence has no row 'events'; run the migrations");
  }
  const lastId = Number(row.last_id);
  const deletions = Number(row.deletions);
  const hash = row.last_hash;
  if (hash === null || hash === undefined) {
    if (lastId === 0) return { lastId, lastHash: GENESIS_HASH, deletions };
    throw new ChainNotBackfilledError();
  }
  return { lastId, lastHash: Buffer.isBuffer(hash) ? hash : Buffer.from(hash as Uint8Array), deletions };
}

/** Whether two states are the same point of the store's history (see AppendState). */
export function sameState(a: AppendState, b: AppendState): boolean {
  return a.lastId === b.lastId && a.deletions === b.deletions;
}

/** The state after rows planned from `from` are stored. */
export function stateAfter(from: AppendState, rows: readonly ChainedRow[]): AppendState {
  const last = rows[rows.length - 1];
  return last === undefined ? from : { lastId: last.id, lastHash: last.hash, deletions: from.deletions };
}

/** A chained row's values in INSERT_COLUMNS order. */
export function chainedValues(row: ChainedRow): unknown[] {
  return [row.id, ...rowValues(row), row.hash, row.prev_hash, row.signature];
}

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
   * One append transaction, in the order of the lock that orders appends (the event_sequence row,
   * held until COMMIT, also across processes): runs `reads`, which see every append committed
   * before; passes the state at the lock — the last id allocated and its chain hash — and each
   * read's rows to `plan`, inserts the rows it returns (ids lastId + 1, lastId + 2… in order, each
   * chained to the one before), records the last one's id and hash in event_sequence, and commits.
   *
   * `plan` may be called twice for one append: a dialect may first plan from the state it expects
   * (its own last commit) and send everything at once, then, when another process appended in
   * between, plan again from what it finds under the lock. It must depend on nothing but its
   * arguments.
   */
  append(reads: readonly CompiledQuery[], plan: AppendPlanner): Promise<AppendState>;
  /** Runs `fn` holding a lock that serializes migrations across processes. */
  withMigrationLock<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Runs `fn` holding the lock `name`, for a read-then-write that must not interleave with another
   * (e.g. a count checked against a cap, then the insert): across processes on MySQL (GET_LOCK,
   * waiting at most the store's timeout), within this process on SQLite (one process per file).
   */
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T>;
  /** Runs one migration file's statements. */
  runScript(sql: string): Promise<void>;
  /** Whether one subject's pages need `forceIndex` (MariaDB), or the planner seeks by itself (SQLite). */
  readonly hintsSubjectPages: boolean;
  /** Whether both subject indexes carry event_size (MariaDB: stored; SQLite's is computed from the row). */
  readonly subjectIndexesCarrySize: boolean;
  /**
   * How many subject-index entries a read examines for the cost of one row walked in id order
   * (see EventRepository's #subtreeRead): measured at 5M events on MariaDB ~2, at 1M on SQLite ~1.
   */
  readonly entriesPerRow: number;
  /** The clause after `FROM events` that makes a read use `index`: FORCE INDEX, INDEXED BY (NOT INDEXED). */
  forceIndex(index: EventsIndex): string;
  /**
   * How many index entries a read of `query` examines as the planner estimates it (MariaDB: EXPLAIN's
   * rows, from index dives), or undefined where the planner gives no figure (SQLite: count instead).
   */
  estimateRows(query: CompiledQuery): Promise<number | undefined>;
  /** Stored time text → canonical RFC 3339; canonical → stored text. */
  readTime(value: string): string;
  writeTime(canonical: string): string;
  /** True for a unique-key violation (a concurrent append of the same (source, id)). */
  isDuplicateKey(error: unknown): boolean;
  /** Current pool usage for metrics and /readyz. */
  poolStats(): { used: number; idle: number; size: number };
  close(): Promise<void>;
}
