import { Kysely, MysqlDialect, sql } from "kysely";
import { createPool, type Pool, type PoolConnection } from "mysql2";
import { fromSqlDateTime, toSqlDateTime } from "../events/time.js";
import type { StorageDialect } from "./dialect.js";
import type { Database } from "./schema.js";

/** MySQL 8 or MariaDB 10.11+ through a mysql2 pool. */
export function createMysqlDialect(url: string, poolSize: number): StorageDialect {
  const pool: Pool = createPool({
    uri: url,
    connectionLimit: poolSize,
    charset: "utf8mb4",
    // BIGINT ids as numbers while they are safe integers (2^53; far beyond any event count).
    supportBigNumbers: true,
    bigNumberStrings: false,
    // DATETIME(6) as text: a Date would drop the microseconds.
    dateStrings: true,
    timezone: "Z",
    enableKeepAlive: true,
  });
  const db = new Kysely<Database>({ dialect: new MysqlDialect({ pool }) });
  let closed = false;

  const getConnection = (): Promise<PoolConnection> =>
    new Promise((resolve, reject) => pool.getConnection((err, conn) => (err ? reject(err) : resolve(conn))));
  const query = (conn: PoolConnection, text: string, values: unknown[] = []): Promise<unknown> =>
    new Promise((resolve, reject) =>
      conn.query(text, values, (err, rows) => (err ? reject(err) : resolve(rows))),
    );

  return {
    name: "mysql",
    db,
    async allocateIds(trx, count) {
      // LAST_INSERT_ID(expr) hands the new value back in the OK packet: one round trip, and the row
      // lock serializes writers across processes until COMMIT (see sql/mysql/002_event_sequence.sql).
      const result = await sql`
        UPDATE event_sequence SET last_id = LAST_INSERT_ID(last_id + ${count}) WHERE name = 'events'
      `.execute(trx);
      if (result.numAffectedRows !== 1n || result.insertId === undefined) {
        throw new Error("event_sequence has no row 'events'; run the migrations");
      }
      return Number(result.insertId);
    },
    async withMigrationLock(fn) {
      const conn = await getConnection();
      try {
        const rows = (await query(conn, "SELECT GET_LOCK('eventsdb_migrations', 120) AS got")) as {
          got: number;
        }[];
        if (rows[0]?.got !== 1) throw new Error("timed out waiting for another process's migrations");
        try {
          return await fn();
        } finally {
          await query(conn, "SELECT RELEASE_LOCK('eventsdb_migrations')");
        }
      } finally {
        conn.release();
      }
    },
    async runScript(script) {
      const conn = await getConnection();
      try {
        for (const statement of splitStatements(script)) await query(conn, statement);
      } finally {
        conn.release();
      }
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
