import fs from "node:fs";
import path from "node:path";
import type SqliteDatabase from "better-sqlite3";
import {
  CompiledQuery,
  type DatabaseConnection,
  type Driver,
  Kysely,
  SqliteDialect,
  SqliteDriver,
  sql,
} from "kysely";
import {
  type AppendState,
  type ChainedRow,
  chainedValues,
  INSERT_COLUMNS,
  type StorageDialect,
  sameState,
  stateAfter,
  stateOf,
} from "./dialect.js";
import { loadDriver } from "./driver.js";
import { withLocalLock } from "./local-lock.js";
import type { Database } from "./schema.js";
import { withFastRows } from "./sqlite-rows.js";

const INSERT_EVENT = `INSERT INTO events (${INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;

/** Embedded SQLite (better-sqlite3) in WAL mode: the default store, one file, no server. */
export function createSqliteDialect(file: string, timeoutMs: number): StorageDialect {
  if (file !== ":memory:") fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  // better-sqlite3 loads when a SQLite store is opened: a MySQL start never loads it (see driver.ts).
  const database = new (loadDriver<typeof SqliteDatabase>("better-sqlite3"))(file);
  // WAL lets readers run beside the writer; FULL sync because nothing acknowledged may be lost.
  database.pragma("journal_mode = WAL");
  database.pragma("synchronous = FULL");
  // A lock held by another process is waited for at most --db-timeout, then SQLITE_BUSY (503).
  // The wait blocks the event loop (better-sqlite3 is synchronous), one more reason to keep it short.
  database.pragma(`busy_timeout = ${Math.trunc(timeoutMs)}`);
  database.pragma("foreign_keys = ON");
  const db = new Kysely<Database>({ dialect: new ImmediateSqliteDialect({ database }) });
  let closed = false;
  /** Prepared on the first append (the table exists only after the migrations). */
  let insert: SqliteDatabase.Statement | undefined;
  /** The chain's end after this process's last append (see append). */
  let expected: AppendState | undefined;

  let advance: SqliteDatabase.Statement | undefined;
  /** The fast path's statements (see appendPlanned), prepared once. */
  let fast:
    | { begin: SqliteDatabase.Statement; state: SqliteDatabase.Statement; commit: SqliteDatabase.Statement }
    | undefined;

  /**
   * Rows planned from `guess` appended in one synchronous transaction on cached statements: BEGIN
   * IMMEDIATE, the sequence row read, the INSERTs, COMMIT, with no await between them, so no other
   * query can run on the connection meanwhile. Through Kysely the same took a prepare of each of
   * BEGIN, the read and COMMIT and a few promise turns on every append. Undefined, with nothing
   * stored, when another process appended since `guess` (the caller plans again under the lock).
   */
  function appendPlanned(rows: readonly ChainedRow[], guess: AppendState): AppendState | undefined {
    fast ??= {
      begin: database.prepare("BEGIN IMMEDIATE"),
      state: database.prepare(
        "SELECT last_id, last_hash, deletions FROM event_sequence WHERE name = 'events'",
      ),
      commit: database.prepare("COMMIT"),
    };
    fast.begin.run();
    try {
      const state = stateOf(fast.state.get() as Record<string, unknown> | undefined);
      if (!sameState(state, guess)) {
        database.exec("ROLLBACK");
        return undefined;
      }
      if (rows.length > 0) insertRows(rows);
      fast.commit.run();
      return stateAfter(state, rows);
    } catch (error) {
      // Some errors (SQLITE_FULL, SQLITE_IOERR…) have rolled the transaction back already.
      if (database.inTransaction) database.exec("ROLLBACK");
      throw error;
    }
  }

  /** Inserts planned rows and records the chain's end, inside the transaction Kysely holds. */
  function insertRows(rows: readonly ChainedRow[]): void {
    // One prepared statement run per row (so no other query interleaves): better-sqlite3 runs
    // each in a few µs, where building multi-row INSERTs through Kysely cost more than SQLite's work.
    insert ??= database.prepare(INSERT_EVENT);
    for (const row of rows) insert.run(...chainedValues(row));
    const last = rows[rows.length - 1] as ChainedRow;
    advance ??= database.prepare(
      "UPDATE event_sequence SET last_id = ?, last_hash = ? WHERE name = 'events'",
    );
    advance.run(last.id, last.hash);
  }

  return {
    name: "sqlite",
    db,
    commitsOffLoop: false,
    async append(reads, plan) {
      // Planned (hashed, signed) before the write lock from the state this process left, when
      // there is nothing to read: the lock is then held only for the INSERTs. Planned again under
      // the lock if another process appended meanwhile.
      const guess = reads.length === 0 ? expected : undefined;
      const early = guess === undefined ? undefined : await plan(guess, []);
      expected = undefined;
      // Not inside a transaction Kysely holds open on the connection (the slow path below, a
      // migration): that one has the connection until it ends, so this append waits its turn there.
      if (early !== undefined && guess !== undefined && !database.inTransaction) {
        const end = appendPlanned(early, guess);
        if (end !== undefined) {
          expected = end;
          return end;
        }
      }
      // BEGIN IMMEDIATE holds the database's write lock from the start: every read below sees
      // every append committed before, and no other append commits until this one has.
      const end = await db.transaction().execute(async (trx) => {
        const sequence = await sql<{ last_id: number; last_hash: Buffer | null; deletions: number }>`
          SELECT last_id, last_hash, deletions FROM event_sequence WHERE name = 'events'
        `.execute(trx);
        const state = stateOf(sequence.rows[0]);
        let rows = early;
        if (rows === undefined || guess === undefined || !sameState(state, guess)) {
          const results: Record<string, unknown>[][] = [];
          for (const read of reads) {
            results.push(
              (await trx.executeQuery<Record<string, unknown>>(read)).rows as Record<string, unknown>[],
            );
          }
          rows = await plan(state, results);
        }
        if (rows.length > 0) insertRows(rows);
        return stateAfter(state, rows);
      });
      expected = end;
      return end;
    },
    async withMigrationLock(fn) {
      // BEGIN IMMEDIATE takes the write lock up front, so a second process waits (busy_timeout)
      // instead of failing half-way; SQLite DDL is transactional, so a failure leaves nothing.
      database.exec("BEGIN IMMEDIATE");
      try {
        const result = await fn();
        database.exec("COMMIT");
        return result;
      } catch (error) {
        if (database.inTransaction) database.exec("ROLLBACK");
        throw error;
      }
    },
    // One process per file (see dialect.ts), so a lock of this process, per file: two stores
    // opened on one file in this process share it.
    withLock: (name, fn) => withLocalLock(`${path.resolve(file)}\0${name}`, fn),
    async runScript(script) {
      database.exec(script);
    },
    // SQLite's planner seeks (subject, id) and (subject, type, id) by itself.
    hintsSubjectPages: false,
    subjectIndexesCarrySize: false,
    entriesPerRow: 1,
    // The primary key is the rowid: NOT INDEXED leaves it the only way.
    forceIndex: (index) => (index === "PRIMARY" ? "NOT INDEXED" : `INDEXED BY ${index}`),
    // No estimate to ask for: the repository counts, bounded (an index-only count, in process).
    estimateRows: async () => undefined,
    readTime: (value) => value,
    writeTime: (canonical) => canonical,
    isDuplicateKey: (error) =>
      typeof error === "object" &&
      error !== null &&
      (error as { code?: unknown }).code === "SQLITE_CONSTRAINT_UNIQUE",
    poolStats: () => ({ used: 0, idle: 1, size: 1 }),
    async close() {
      if (closed) return;
      closed = true;
      await db.destroy();
    },
  };
}

/**
 * Transactions start with BEGIN IMMEDIATE: a deferred BEGIN that later writes fails at once with
 * SQLITE_BUSY when another process holds the write lock; IMMEDIATE waits for it (busy_timeout).
 */
class ImmediateSqliteDialect extends SqliteDialect {
  readonly #database: SqliteDatabase.Database;

  constructor(config: { database: SqliteDatabase.Database }) {
    super(config);
    this.#database = config.database;
  }

  override createDriver(): Driver {
    return new ImmediateSqliteDriver(this.#database);
  }
}

class ImmediateSqliteDriver extends SqliteDriver {
  readonly #database: SqliteDatabase.Database;

  /** Kysely's queries go through withFastRows; the transaction state is the database's own. */
  constructor(database: SqliteDatabase.Database) {
    super({ database: withFastRows(database) });
    this.#database = database;
  }

  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw("begin immediate"));
  }

  /**
   * Some errors (SQLITE_FULL, SQLITE_IOERR…) roll the transaction back by themselves; a ROLLBACK
   * then fails ("no transaction is active") and that error would replace the one that says why.
   */
  override async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    if (this.#database.inTransaction) await super.rollbackTransaction(connection);
  }
}
