import fs from "node:fs";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import {
  CompiledQuery,
  type DatabaseConnection,
  type Driver,
  Kysely,
  SqliteDialect,
  type SqliteDialectConfig,
  SqliteDriver,
  sql,
  type Transaction,
} from "kysely";
import { type NewRow, rowValues, type StorageDialect } from "./dialect.js";
import type { Database } from "./schema.js";

const INSERT_EVENT =
  "INSERT INTO events (id, source, type, subject, ce_id, time, datacontenttype, dataschema, extensions, data) " +
  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/** Embedded SQLite (better-sqlite3) in WAL mode: the default store, one file, no server. */
export function createSqliteDialect(file: string, timeoutMs: number): StorageDialect {
  if (file !== ":memory:") fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const database = new SqliteDatabase(file);
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

  /** Reserves rows.length ids and inserts the rows with them, inside `trx`; returns the first id. */
  async function insertRows(trx: Transaction<Database>, rows: readonly NewRow[]): Promise<number> {
    const result = await sql<{ last_id: number }>`
      UPDATE event_sequence SET last_id = last_id + ${rows.length} WHERE name = 'events' RETURNING last_id
    `.execute(trx);
    const last = result.rows[0]?.last_id;
    if (last === undefined) throw new Error("event_sequence has no row 'events'; run the migrations");
    const first = Number(last) - rows.length + 1;
    // One prepared statement run per row, inside the transaction Kysely holds (so no other
    // query interleaves): better-sqlite3 runs each in a few µs, where building multi-row
    // INSERTs through Kysely cost more than SQLite's own work.
    insert ??= database.prepare(INSERT_EVENT);
    let id = first;
    for (const row of rows) insert.run(id++, ...rowValues(row));
    return first;
  }

  return {
    name: "sqlite",
    db,
    commitsOffLoop: false,
    insertEvents(rows) {
      return db.transaction().execute((trx) => insertRows(trx, rows));
    },
    async insertChecked(reads, choose) {
      // BEGIN IMMEDIATE holds the database's write lock from the start: every read below sees
      // every append committed before, and no other append commits until this one has.
      await db.transaction().execute(async (trx) => {
        const sequence = await sql<{ last_id: number }>`
          SELECT last_id FROM event_sequence WHERE name = 'events'
        `.execute(trx);
        const last = sequence.rows[0]?.last_id;
        if (last === undefined) throw new Error("event_sequence has no row 'events'; run the migrations");
        const results: Record<string, unknown>[][] = [];
        for (const read of reads) {
          results.push(
            (await trx.executeQuery<Record<string, unknown>>(read)).rows as Record<string, unknown>[],
          );
        }
        const rows = choose(Number(last), results);
        if (rows.length > 0) await insertRows(trx, rows);
      });
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
    async runScript(script) {
      database.exec(script);
    },
    // SQLite's planner seeks (subject, id) by itself.
    subjectIndexHint: "",
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
  readonly #config: SqliteDialectConfig & { database: SqliteDatabase.Database };

  constructor(config: SqliteDialectConfig & { database: SqliteDatabase.Database }) {
    super(config);
    this.#config = config;
  }

  override createDriver(): Driver {
    return new ImmediateSqliteDriver(this.#config);
  }
}

class ImmediateSqliteDriver extends SqliteDriver {
  readonly #database: SqliteDatabase.Database;

  constructor(config: SqliteDialectConfig & { database: SqliteDatabase.Database }) {
    super(config);
    this.#database = config.database;
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
