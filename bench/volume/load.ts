import { performance } from "node:perf_hooks";
import SqliteDatabase from "better-sqlite3";
import { createConnection, type ExecuteValues } from "mysql2/promise";
import { parseDatabaseUrl } from "../../src/config.js";
import { contentDigest, GENESIS_HASH, linkHash } from "../../src/events/chain.js";
import { chainedValues, INSERT_COLUMNS, type StorageDialect } from "../../src/storage/dialect.js";
import { migrate } from "../../src/storage/migrate.js";
import { openDialect } from "../../src/storage/open.js";
import { toChainedRow } from "../../src/storage/repository.js";
import { EventStream, type Landmarks, landmarks } from "./dataset.js";

/**
 * The volume bench's loader: fills a fresh store with `events` events (bench/volume/dataset.ts)
 * by direct SQL, fast, storing exactly what appends through the server would have stored:
 *
 * - the schema from the project's own migrations (migrate(), on the empty store first);
 * - ids 1…N in order, each row built by the repository's own toChainedRow and inserted in the
 *   dialects' INSERT_COLUMNS order (event_size is a generated column, the store computes it);
 * - the hash chain with chain.ts's contentDigest/linkHash, prev_hash of id 1 the genesis hash;
 * - event_sequence.last_id/last_hash set to the last event at the end, in the last transaction.
 *
 * Subject heads (src/storage/subject-heads.ts) are a per-process cache, not a table: nothing to
 * write. Rows go in as multi-row INSERTs of ROWS_PER_INSERT rows in transactions of
 * ROWS_PER_COMMIT; the next statement is built (and hashed) while the previous one runs. On
 * MariaDB unique_checks=0 lets InnoDB buffer the unique (source, ce_id) index's changes: the loader
 * makes every key unique itself, so nothing it would have refused is stored.
 */

/** Rows per INSERT statement (13 placeholders each). */
const ROWS_PER_INSERT = 500;
/** Rows per transaction. */
const ROWS_PER_COMMIT = 50_000;
/**
 * The tables of a migrated store and what the loader does with each: events and event_sequence it
 * fills; the others start empty in a fresh store. A table a later migration adds fails the load
 * until it is listed here (or filled), so a loaded store never silently lacks derived rows.
 */
const KNOWN_TABLES = new Set([
  "events",
  "event_sequence",
  "eventsdb_migrations",
  "eventsdb_sessions",
  "eventsdb_subscriptions",
]);
/** How long the loader's migrate and reads may take per call. */
const DB_TIMEOUT_MS = 600_000;

export interface LoadOptions {
  readonly events: number;
  readonly seed: number;
  /** Told now and then: events stored so far. */
  readonly progress?: (done: number, total: number) => void;
}

export interface LoadResult {
  readonly landmarks: Landmarks;
  readonly seconds: number;
  readonly eventsPerSecond: number;
  /** The last event's hash in hex (what `eventsdb verify` must end on). */
  readonly lastHash: string;
}

/** Migrates the store at `databaseUrl` (which must hold no events) and loads it; see above. */
export async function loadVolume(databaseUrl: string, options: LoadOptions): Promise<LoadResult> {
  if (!Number.isSafeInteger(options.events) || options.events < 1) {
    throw new Error("the volume loader loads at least one event");
  }
  const store = parseDatabaseUrl(databaseUrl, 2);
  const dialect = openDialect(store, DB_TIMEOUT_MS);
  let writeTime: StorageDialect["writeTime"];
  try {
    await migrate(dialect);
    const sequence = await dialect.db
      .selectFrom("event_sequence")
      .select("last_id")
      .where("name", "=", "events")
      .executeTakeFirst();
    const any = await dialect.db.selectFrom("events").select("id").limit(1).executeTakeFirst();
    if (any !== undefined || Number(sequence?.last_id ?? 0) !== 0) {
      throw new Error("the volume loader fills an empty store only: this one has events");
    }
    const unknown = (await dialect.db.introspection.getTables())
      .map((table) => table.name)
      .filter((name) => !KNOWN_TABLES.has(name));
    if (unknown.length > 0) {
      throw new Error(
        `the volume loader does not know the table(s) ${unknown.join(", ")} that a migration added: ` +
          "teach bench/volume/load.ts to fill them (or add them to KNOWN_TABLES if they start empty)",
      );
    }
    writeTime = dialect.writeTime;
  } finally {
    await dialect.close();
  }

  const started = performance.now();
  const stream = new EventStream(options.events, options.seed);
  let prevHash = GENESIS_HASH;
  let nextId = 1;
  /** The next statement's values: up to ROWS_PER_INSERT rows, built and chained. */
  const batch = (): { rows: number; values: unknown[] } => {
    const values: unknown[] = [];
    let rows = 0;
    while (rows < ROWS_PER_INSERT && nextId <= options.events) {
      const event = stream.next(nextId);
      const hash = linkHash(nextId, prevHash, contentDigest(event, event.time));
      const chained = { ...event, hash, prevHash };
      for (const value of chainedValues(toChainedRow(chained, writeTime))) values.push(value);
      prevHash = hash;
      nextId++;
      rows++;
    }
    return { rows, values };
  };
  const sink = store.kind === "sqlite" ? sqliteSink(store.path) : await mysqlSink(store.url);
  try {
    let done = 0;
    let sinceCommit = 0;
    let next = batch();
    await sink.begin();
    while (next.rows > 0) {
      const running = sink.insert(next.rows, next.values);
      const following = batch();
      await running;
      done += next.rows;
      sinceCommit += next.rows;
      if (sinceCommit >= ROWS_PER_COMMIT && following.rows > 0) {
        await sink.commit();
        await sink.begin();
        sinceCommit = 0;
        options.progress?.(done, options.events);
      }
      next = following;
    }
    await sink.finish(options.events, prevHash);
  } finally {
    await sink.close();
  }
  const seconds = (performance.now() - started) / 1000;
  options.progress?.(options.events, options.events);
  return {
    landmarks: landmarks(stream, options.seed),
    seconds,
    eventsPerSecond: options.events / seconds,
    lastHash: prevHash.toString("hex"),
  };
}

/** Where the rows go: one connection, explicit transactions. */
interface Sink {
  begin(): Promise<void>;
  insert(rows: number, values: unknown[]): Promise<void>;
  commit(): Promise<void>;
  /** Records the chain's end in event_sequence and commits. */
  finish(lastId: number, lastHash: Buffer): Promise<void>;
  close(): Promise<void>;
}

function insertSql(rows: number): string {
  const row = `(${INSERT_COLUMNS.split(",")
    .map(() => "?")
    .join(", ")})`;
  return `INSERT INTO events (${INSERT_COLUMNS}) VALUES ${Array.from({ length: rows }, () => row).join(", ")}`;
}

async function mysqlSink(url: string): Promise<Sink> {
  const connection = await createConnection({ uri: url, supportBigNumbers: true, bigNumberStrings: false });
  await connection.query("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'");
  await connection.query("SET SESSION unique_checks = 0, foreign_key_checks = 0");
  // Full-size statements are prepared once (the binary protocol sends the data as bytes).
  const full = insertSql(ROWS_PER_INSERT);
  return {
    begin: async () => {
      await connection.query("BEGIN");
    },
    insert: async (rows, values) => {
      await connection.execute(rows === ROWS_PER_INSERT ? full : insertSql(rows), values as ExecuteValues[]);
    },
    commit: async () => {
      await connection.query("COMMIT");
    },
    finish: async (lastId, lastHash) => {
      await connection.execute("UPDATE event_sequence SET last_id = ?, last_hash = ? WHERE name = 'events'", [
        lastId,
        lastHash,
      ]);
      await connection.query("COMMIT");
      await connection.query("SET SESSION unique_checks = 1, foreign_key_checks = 1");
    },
    close: () => connection.end(),
  };
}

function sqliteSink(file: string): Sink {
  const database = new SqliteDatabase(file);
  // The migrations set WAL (it stays with the file); the load needs no fsync per commit: a crash
  // mid-load leaves a store to throw away anyway. The server opens it with synchronous = FULL.
  database.pragma("synchronous = OFF");
  database.pragma("cache_size = -262144");
  const full = database.prepare(insertSql(ROWS_PER_INSERT));
  return {
    begin: async () => {
      database.exec("BEGIN IMMEDIATE");
    },
    insert: async (rows, values) => {
      (rows === ROWS_PER_INSERT ? full : database.prepare(insertSql(rows))).run(...values);
    },
    commit: async () => {
      database.exec("COMMIT");
    },
    finish: async (lastId, lastHash) => {
      database
        .prepare("UPDATE event_sequence SET last_id = ?, last_hash = ? WHERE name = 'events'")
        .run(lastId, lastHash);
      database.exec("COMMIT");
      database.pragma("wal_checkpoint(TRUNCATE)");
    },
    close: async () => {
      database.close();
    },
  };
}
