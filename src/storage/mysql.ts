import {
  CompiledQuery,
  Kysely,
  MysqlDialect,
  type MysqlPool,
  type MysqlPoolConnection,
  type MysqlQueryResult,
  type MysqlStream,
  type MysqlStreamOptions,
  sql,
} from "kysely";
import type * as Mysql2 from "mysql2";
import type { Connection, Pool, PoolConnection, PoolOptions } from "mysql2";
import { fromSqlDateTime, toSqlDateTime } from "../events/time.js";
import { INSERT_BYTES, insertChunks } from "./chunks.js";
import {
  type AppendState,
  type ChainedRow,
  chainedValues,
  INSERT_COLUMNS,
  type StorageDialect,
  stateAfter,
  stateOf,
} from "./dialect.js";
import { loadDriver } from "./driver.js";
import { withLocalLock } from "./local-lock.js";
import type { Database } from "./schema.js";
import { StoreTimeoutError, withTimeout } from "./timeout.js";

/** mysql2, loaded when a MySQL store is opened: a SQLite start never loads it (see driver.ts). */
const mysql2 = () => loadDriver<typeof Mysql2>("mysql2");

/**
 * Callers that may wait for a pool connection at once; beyond it a read fails at once (503)
 * instead of queueing. Each waits at most --db-timeout anyway; this bounds the queue's memory
 * when a frozen database meets a burst of requests.
 */
export const POOL_QUEUE_LIMIT = 1000;
/** A new connection that has not finished its handshake by then is given up (at most --db-timeout). */
const CONNECT_TIMEOUT_MS = 2000;
/** How long a start waits for another process's migrations. */
const MIGRATION_LOCK_SECONDS = 120;
let nextInstance = 0;

/**
 * MySQL 8 or MariaDB 10.11+ through a mysql2 pool (reads) and one writer connection. Every wait —
 * for a connection, for a query's answer, for a whole commit — ends after `timeoutMs`; migrations
 * alone are not bounded (an ALTER TABLE may take long, and runs before the server listens).
 */
export function createMysqlDialect(url: string, poolSize: number, timeoutMs: number): StorageDialect {
  const options: PoolOptions = {
    uri: url,
    charset: "utf8mb4",
    // BIGINT ids as numbers while they are safe integers (2^53; far beyond any event count).
    supportBigNumbers: true,
    bigNumberStrings: false,
    // DATETIME(6) as text: a Date would drop the microseconds.
    dateStrings: true,
    timezone: "Z",
    enableKeepAlive: true,
    // Fail fast when the server is gone: callers get 503 instead of waiting 10 s.
    connectTimeout: Math.min(CONNECT_TIMEOUT_MS, timeoutMs),
  };
  const pool: Pool = mysql2().createPool({
    ...options,
    connectionLimit: poolSize,
    queueLimit: POOL_QUEUE_LIMIT,
  });
  const writer = new WriterConnection(options, timeoutMs);
  const db = new Kysely<Database>({ dialect: new MysqlDialect({ pool: new BoundedPool(pool, timeoutMs) }) });
  let closed = false;
  /** This store's own key for withLocalLock: another store in this process stands for another process. */
  const instance = nextInstance++;

  /**
   * The chain's end after this process's last append, while nothing says another process appended
   * since: appends plan from it and go out whole, one round trip (see append).
   */
  let expected: AppendState | undefined;
  const lock = sql`
    SELECT last_id, last_hash, deletions FROM event_sequence WHERE name = 'events' FOR UPDATE
  `.compile(db);

  const getConnection = (): Promise<Connection & { release(): void }> =>
    new Promise((resolve, reject) => pool.getConnection((err, conn) => (err ? reject(err) : resolve(conn))));

  /**
   * Runs `fn` holding the named lock (GET_LOCK, server-wide: every process on this database), on a
   * connection of its own that only holds the lock; `fn`'s queries use the pool. Fails when the
   * lock is not had within `seconds`.
   */
  const withNamedLock = async <T>(name: string, seconds: number, fn: () => Promise<T>): Promise<T> => {
    const conn = await getConnection();
    try {
      const rows = (await run(conn, "SELECT GET_LOCK(?, ?) AS got", [name, seconds])) as { got: number }[];
      if (rows[0]?.got !== 1) throw new Error(`timed out after ${seconds} s waiting for the lock ${name}`);
      try {
        return await fn();
      } finally {
        await run(conn, "SELECT RELEASE_LOCK(?)", [name]);
      }
    } finally {
      conn.release();
    }
  };

  return {
    name: "mysql",
    db,
    commitsOffLoop: true,
    async append(reads, plan) {
      // The common case, one round trip: plan from the state this process left, then send the
      // transaction whole. Its first statement takes the sequence row's lock and checks that
      // last_id and deletions are still what this process left; if another process appended or
      // deleted since, it sets last_id to NULL, which strict mode refuses (ER_BAD_NULL_ERROR), and
      // nothing is stored.
      // A plan that stores nothing (a check alone, or only retries of stored events) has nothing
      // to send that would confirm the state it was made from: it is made again under the lock.
      const state = reads.length === 0 ? expected : undefined;
      expected = undefined;
      const rows = state === undefined ? [] : await plan(state, []);
      if (state !== undefined && rows.length > 0) {
        try {
          await writer.transaction(appendStatements(rows, state));
          expected = stateAfter(state, rows);
          return expected;
        } catch (error) {
          if (!isStale(error)) throw error;
        }
      }
      // Two round trips: the lock (which reads the state) and the reads, then the rows planned
      // from them. READ COMMITTED lets the reads see what committed before the lock was ours.
      let end: AppendState | undefined;
      await writer.transaction([lock, ...reads], async (results) => {
        const locked = stateOf((results[0] as Record<string, unknown>[])[0]);
        const rows = await plan(locked, results.slice(1) as Record<string, unknown>[][]);
        end = stateAfter(locked, rows);
        return rows.length === 0 ? [] : appendStatements(rows, undefined);
      });
      if (end === undefined) throw new Error("the append transaction made no plan");
      expected = end;
      return end;
    },
    withMigrationLock: (fn) => withNamedLock("eventsdb_migrations", MIGRATION_LOCK_SECONDS, fn),
    // Bounded by --db-timeout like every other wait on the store (whole seconds: GET_LOCK's unit).
    // One waiter per process for GET_LOCK: the others queue here, holding no pool connection
    // (waiters holding them all would starve the holder's own queries).
    withLock: (name, fn) =>
      withLocalLock(`mysql\0${instance}\0${name}`, () =>
        withNamedLock(`eventsdb_${name}`, Math.max(1, Math.ceil(timeoutMs / 1000)), fn),
      ),
    async runScript(script) {
      const conn = await getConnection();
      try {
        for (const statement of splitStatements(script)) await run(conn, statement);
      } finally {
        conn.release();
      }
    },
    hintsSubjectPages: true,
    subjectIndexesCarrySize: true,
    entriesPerRow: 2,
    forceIndex: (index) => `FORCE INDEX (${index})`,
    async estimateRows(query) {
      const rows = await db.executeQuery<{ rows?: unknown }>(
        CompiledQuery.raw(`EXPLAIN ${query.sql}`, [...query.parameters]),
      );
      const estimate = Number(rows.rows[0]?.rows);
      return Number.isFinite(estimate) ? estimate : undefined;
    },
    readTime: fromSqlDateTime,
    writeTime: toSqlDateTime,
    isDuplicateKey: (error) =>
      typeof error === "object" && error !== null && (error as { code?: unknown }).code === "ER_DUP_ENTRY",
    poolStats() {
      // mysql2 exposes no public pool counters; these fields are stable across 3.x.
      const internal = pool as unknown as {
        _allConnections?: { length: number };
        _freeConnections?: { length: number };
      };
      const size = internal._allConnections?.length ?? 0;
      const idle = internal._freeConnections?.length ?? 0;
      return { used: size - idle, idle, size: poolSize };
    },
    async close() {
      if (closed) return;
      closed = true;
      await writer.close();
      await db.destroy();
    },
  };
}

/** Splits a migration file into statements: `;` at the end of a line ends one; `--` lines are comments. */
export function splitStatements(script: string): string[] {
  const withoutComments = script
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("--"))
    .join("\n");
  return withoutComments
    .split(/;\s*$/m)
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/**
 * The pool as Kysely sees it, with every wait bounded: for a connection, and for each query's
 * answer. A connection whose query timed out is destroyed, not given back: mysql2 would hold the
 * next query behind the late answer (a frozen server sends it only when it thaws).
 */
class BoundedPool implements MysqlPool {
  readonly #pool: Pool;
  readonly #ms: number;

  constructor(pool: Pool, ms: number) {
    this.#pool = pool;
    this.#ms = ms;
  }

  getConnection(callback: (error: unknown, connection: MysqlPoolConnection) => void): void {
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      callback(new StoreTimeoutError("waiting for a database connection", this.#ms), undefined as never);
    }, this.#ms);
    this.#pool.getConnection((error, connection) => {
      if (settled) {
        // Too late for this caller: the next one in the queue can have it.
        if (!error) connection.release();
        return;
      }
      settled = true;
      clearTimeout(timer);
      if (error) callback(error, undefined as never);
      else callback(null, new BoundedConnection(connection, this.#ms));
    });
  }

  end(callback: (error: unknown) => void): void {
    this.#pool.end(callback);
  }
}

type StreamingQuery = { stream: <T>(options: MysqlStreamOptions) => MysqlStream<T> };

class BoundedConnection implements MysqlPoolConnection {
  readonly #connection: PoolConnection;
  readonly #ms: number;
  #broken = false;

  constructor(connection: PoolConnection, ms: number) {
    this.#connection = connection;
    this.#ms = ms;
  }

  query(sql: string, parameters: unknown[]): StreamingQuery;
  query(
    sql: string,
    parameters: unknown[],
    callback: (error: unknown, result: MysqlQueryResult) => void,
  ): void;
  query(
    sql: string,
    parameters: unknown[],
    callback?: (error: unknown, result: MysqlQueryResult) => void,
  ): StreamingQuery | undefined {
    // Streaming (unused here) has no single answer to wait for.
    if (callback === undefined) return this.#connection.query(sql, parameters) as unknown as StreamingQuery;
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      this.#broken = true;
      callback(new StoreTimeoutError("a query", this.#ms), undefined as never);
    }, this.#ms);
    this.#connection.query(sql, parameters, (error, result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      callback(error, result as unknown as MysqlQueryResult);
    });
    return undefined;
  }

  release(): void {
    if (this.#broken) destroyNow(this.#connection);
    else this.#connection.release();
  }
}

/**
 * Drops a connection for good. mysql2's destroy() only half-closes the socket (FIN) and leaves the
 * command waiting: a frozen or vanished server would keep the socket, and the query with its data,
 * until it answered. The socket itself is destroyed too (mysql2 keeps it as `stream`).
 */
function destroyNow(conn: Connection): void {
  conn.destroy();
  (conn as unknown as { stream?: { destroy?: () => void } }).stream?.destroy?.();
}

function run(conn: Connection, text: string, values: readonly unknown[] = []): Promise<unknown> {
  return new Promise((resolve, reject) =>
    conn.query(text, values as unknown[], (err, result) => (err ? reject(err) : resolve(result))),
  );
}

/**
 * The writer's own connection, with multiple statements enabled; it is only ever given statements
 * compiled by Kysely with bound parameters. A whole group-commit transaction (START TRANSACTION,
 * the id reservation, the INSERTs, COMMIT) goes out as one packet when it fits: one round trip
 * instead of four. Reconnects lazily after a connection error.
 */
class WriterConnection {
  readonly #options: PoolOptions;
  readonly #timeoutMs: number;
  #connection: Connection | undefined;

  constructor(options: PoolOptions, timeoutMs: number) {
    this.#options = options;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Runs the statements in one transaction; returns each statement's result. With `then`, the
   * transaction runs in READ COMMITTED and is not committed after the statements: `then` is given
   * their results and returns the statements that follow before COMMIT (their results are
   * appended). The whole of it, connecting included, is bounded by --db-timeout: past it the
   * connection is dropped, so the server rolls the transaction back (or, if COMMIT was already on
   * its way, commits it: either way the caller was told nothing was acknowledged).
   */
  transaction(
    statements: readonly CompiledQuery[],
    then?: (results: unknown[]) => Promise<readonly CompiledQuery[]>,
  ): Promise<unknown[]> {
    let used: Connection | undefined;
    return withTimeout(
      this.#transaction(statements, then, (conn) => {
        used = conn;
      }),
      this.#timeoutMs,
      "a commit",
      () => {
        if (used !== undefined) this.#drop(used);
      },
    );
  }

  async #transaction(
    statements: readonly CompiledQuery[],
    then: ((results: unknown[]) => Promise<readonly CompiledQuery[]>) | undefined,
    using: (conn: Connection) => void,
  ): Promise<unknown[]> {
    const conn = await this.#connect(using);
    try {
      if (then === undefined) return await send(conn, ["START TRANSACTION"], statements, ["COMMIT"]);
      // SET TRANSACTION applies to the next transaction only.
      const begin = ["SET TRANSACTION ISOLATION LEVEL READ COMMITTED", "START TRANSACTION"];
      const first = await send(conn, begin, statements, []);
      return [...first, ...(await send(conn, [], await then(first), ["COMMIT"]))];
    } catch (error) {
      await run(conn, "ROLLBACK").catch(() => this.#drop(conn));
      throw error;
    }
  }

  async #connect(using: (conn: Connection) => void): Promise<Connection> {
    if (this.#connection !== undefined) {
      using(this.#connection);
      return this.#connection;
    }
    const conn = mysql2().createConnection({ ...this.#options, multipleStatements: true });
    using(conn);
    // Current from the start, so a timeout during the handshake drops it too.
    this.#connection = conn;
    conn.on("error", () => this.#drop(conn));
    try {
      await new Promise<void>((resolve, reject) => conn.connect((err) => (err ? reject(err) : resolve())));
      // Strict, whatever the server's default: the one-round-trip append relies on a NULL being
      // refused, not stored as 0 with a warning (see append).
      await run(
        conn,
        "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES')",
      );
    } catch (error) {
      this.#drop(conn);
      throw error;
    }
    return conn;
  }

  #drop(conn: Connection): void {
    if (this.#connection === conn) this.#connection = undefined;
    destroyNow(conn);
  }

  async close(): Promise<void> {
    const conn = this.#connection;
    this.#connection = undefined;
    if (conn !== undefined) await new Promise<void>((resolve) => conn.end(() => resolve()));
  }
}

/**
 * Sends `head`, the statements and `tail` in as few multi-statement packets as fit (one round trip
 * each); returns the statements' results (not those of `head` and `tail`).
 */
async function send(
  conn: Connection,
  head: readonly string[],
  statements: readonly CompiledQuery[],
  tail: readonly string[],
): Promise<unknown[]> {
  const packets: { text: string[]; values: unknown[]; bytes: number }[] = [];
  let packet = { text: [...head], values: [] as unknown[], bytes: 0 };
  for (const statement of statements) {
    const bytes = statement.sql.length + estimateBytes(statement.parameters);
    if (packet.bytes > 0 && packet.bytes + bytes > INSERT_BYTES) {
      packets.push(packet);
      packet = { text: [], values: [], bytes: 0 };
    }
    packet.text.push(statement.sql);
    packet.values.push(...statement.parameters);
    packet.bytes += bytes;
  }
  packet.text.push(...tail);
  if (packet.text.length > 0) packets.push(packet);
  const results: unknown[] = [];
  for (const p of packets) {
    const result = await run(conn, p.text.join(";\n"), p.values);
    // A multi-statement packet answers with one result per statement.
    results.push(...(p.text.length > 1 ? (result as unknown[]) : [result]));
  }
  return results.slice(head.length, results.length - tail.length);
}

/** True for the refusal of a one-round-trip append planned from a stale state (see append). */
function isStale(error: unknown): boolean {
  return (
    typeof error === "object" && error !== null && (error as { code?: unknown }).code === "ER_BAD_NULL_ERROR"
  );
}

/**
 * One append's statements: the sequence row's update (first, so that it takes the lock before
 * anything is written), then the INSERTs. With `expected`, the update refuses (see append) unless
 * last_id and deletions are still expected's.
 */
function appendStatements(rows: readonly ChainedRow[], expected: AppendState | undefined): CompiledQuery[] {
  const last = rows[rows.length - 1] as ChainedRow;
  const update =
    expected === undefined
      ? CompiledQuery.raw("UPDATE event_sequence SET last_id = ?, last_hash = ? WHERE name = 'events'", [
          last.id,
          last.hash,
        ])
      : CompiledQuery.raw(
          "UPDATE event_sequence SET last_id = IF(last_id = ? AND deletions = ?, ?, NULL), last_hash = ? " +
            "WHERE name = 'events'",
          [expected.lastId, expected.deletions, last.id, last.hash],
        );
  return [update, ...insertChunks(rows).map(insertStatement)];
}

const INSERT_EVENTS = `INSERT INTO events (${INSERT_COLUMNS}) VALUES `;
const ROW_PARAMETERS = "(?,?,?,?,?,?,?,?,?,?,?,?,?)";

/**
 * One multi-row INSERT. Written out rather than built with Kysely: on the hot path, Kysely's
 * per-row value parsing and node trees were a tenth of the server's CPU in a batch ingest and
 * most of its garbage; the SQL is fixed text with bound parameters either way.
 */
function insertStatement(rows: readonly ChainedRow[]): CompiledQuery {
  const parameters: unknown[] = [];
  for (const row of rows) parameters.push(...chainedValues(row));
  return CompiledQuery.raw(INSERT_EVENTS + new Array(rows.length).fill(ROW_PARAMETERS).join(","), parameters);
}

function estimateBytes(values: readonly unknown[]): number {
  let bytes = 0;
  for (const v of values) {
    bytes += Buffer.isBuffer(v) ? v.length * 2 + 3 : typeof v === "string" ? v.length * 2 + 2 : 24;
  }
  return bytes;
}
