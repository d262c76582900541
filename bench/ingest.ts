import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import type { Instance, Request, Result } from "autocannon";
import autocannon from "autocannon";
import SqliteDatabase from "better-sqlite3";
import type { Connection, RowDataPacket } from "mysql2/promise";
import type { ServerProcess } from "../test/support/process.js";
import {
  buildDist,
  Cleanup,
  checkArguments,
  formatRate,
  formatTable,
  machineInfo,
  parseDuration,
  percentile,
  ROOT,
  serverEnv,
  startBenchDatabase,
  startServerChild,
  textOption,
  writeResults,
} from "./support.js";

/** Rows of the raw ceiling run, and rows per multi-row INSERT (the server's INSERT_ROWS too). */
const RAW_ROWS = 100_000;
export const RAW_STATEMENT_ROWS = 500;
const SINGLE_ROW_SECONDS = 3;
export const DATA_BYTES = 100;
export const SUBJECTS = 100;
const DEFAULT_SECONDS = 10;
const WARMUP_SECONDS = 2;
const WARMUP_CONNECTIONS = 16;
const CONNECTION_STEPS = [1, 16, 64] as const;
const DISTINCT_BODIES = 64;
export const BATCH_EVENTS = 500;
const BATCH_BODIES = 4;
export const BATCH_CONNECTIONS = 4;

const TARGET_1_CONN = 2_200;
export const TARGET_64_CONNS = 14_000;
/** POST 64 conns with a precondition per request must reach this fraction of POST 64 conns (≤ 15 % slower). */
export const PRECONDITION_TARGET_FRACTION = 0.85;
/** Batch POST must reach this fraction of the raw 500-row INSERT ceiling measured in the same run. */
export const BATCH_TARGET_FRACTION = 0.5;
const REFERENCE = "Go Events DB ~4,800/s at 64 connections (one INSERT per request)";

/** One line of the results table. */
export interface Measurement {
  name: string;
  eventsPerSecond: number;
  p50Ms: number | undefined;
  p99Ms: number | undefined;
  errors: number | undefined;
  non2xx: number | undefined;
  target: number | undefined;
  ok: boolean | undefined;
  /** Events stored by this run (2xx × events per request, or rows inserted). */
  events: number;
  seconds: number;
  detail?: Record<string, unknown>;
}

export interface RawResult {
  rows: number;
  statements: number;
  seconds: number;
  rowsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
}

/** Where the server stores: a throwaway MariaDB (with raw INSERT baselines) or an SQLite file. */
interface Store {
  readonly label: string;
  readonly raw: { single: RawResult; multi: RawResult } | undefined;
  /** Events in the store, counted beside the server. */
  count(): Promise<number>;
}

/**
 * `npm run bench -- ingest [--duration S] [--store mysql|sqlite]`: REST ingest throughput against a
 * throwaway MariaDB (default; with the raw INSERT ceiling as baseline) or the embedded SQLite
 * default (a file in a temp dir; no raw baseline, so no batch target).
 */
export async function runIngest(args: readonly string[]): Promise<void> {
  checkArguments("ingest", args, ["--duration", "--store"], []);
  const seconds = parseDuration(args, DEFAULT_SECONDS);
  const storeKind = textOption(args, "--store") ?? "mysql";
  if (storeKind !== "mysql" && storeKind !== "sqlite") throw new Error("--store is mysql or sqlite");
  const cleanup = new Cleanup();
  const removeSignalHandlers = cleanup.onSignals();
  try {
    let store: Store;
    let databaseUrl: string;
    if (storeKind === "mysql") {
      const { mariadb, admin, mariadbVersion } = await startBenchDatabase(cleanup);
      process.stderr.write(`bench: raw ceiling: ${RAW_ROWS} rows as ${RAW_STATEMENT_ROWS}-row INSERTs\n`);
      store = {
        label: `MariaDB ${mariadbVersion}`,
        raw: await rawInserts(admin),
        count: () => mysqlEventCount(admin),
      };
      databaseUrl = mariadb.url;
    } else {
      process.stderr.write("bench: building dist/ (tsc -p tsconfig.build.json)\n");
      await buildDist();
      const dir = await mkdtemp(path.join(os.tmpdir(), "eventsdb-bench-sqlite-"));
      cleanup.add("remove the SQLite dir", () => rm(dir, { recursive: true, force: true }));
      const file = path.join(dir, "events.db");
      store = {
        label: "SQLite (WAL, synchronous=FULL)",
        raw: undefined,
        count: async () => {
          const db = new SqliteDatabase(file, { readonly: true });
          try {
            return Number((db.prepare("SELECT COUNT(*) AS n FROM events").get() as { n: number }).n);
          } finally {
            db.close();
          }
        },
      };
      databaseUrl = `sqlite:${file}`;
    }

    process.stderr.write("bench: starting the server\n");
    const server = await startServerChild(serverEnv(databaseUrl));
    cleanup.add("stop server", () => server.stop());

    let current: Instance | undefined;
    cleanup.add("stop load", async () => current?.stop());
    const cannon = (title: string, options: CannonOptions): Promise<CannonRun> =>
      runCannon(server, title, options, (instance) => {
        current = instance;
      });

    const single = singleBodies();
    const { result: warmup } = await cannon("warm-up", {
      connections: WARMUP_CONNECTIONS,
      duration: WARMUP_SECONDS,
      requests: single,
    });
    let storedAtLeast = warmup["2xx"];

    const raw = store.raw;
    const measurements: Measurement[] =
      raw === undefined
        ? []
        : [
            {
              name: "raw single-row INSERT (rows/s)",
              ...rawMeasurement(raw.single),
              target: undefined,
              ok: undefined,
            },
            {
              name: `raw ${RAW_STATEMENT_ROWS}-row INSERT ceiling (rows/s)`,
              ...rawMeasurement(raw.multi),
              target: undefined,
              ok: undefined,
            },
          ];
    for (const connections of CONNECTION_STEPS) {
      const name = connections === 1 ? "POST 1 conn" : `POST ${connections} conns`;
      const run = await cannon(name, { connections, duration: seconds, requests: single });
      storedAtLeast += run.result["2xx"];
      const target = connections === 1 ? TARGET_1_CONN : connections === 64 ? TARGET_64_CONNS : undefined;
      measurements.push(cannonMeasurement(name, run, 1, target));
    }
    // The cost of a precondition: each request carries isSubjectPopulated on its own subject
    // (true since the warm-up), so every append checks its subject's last event in the lock.
    const post64 = measurements.at(-1) as Measurement;
    const preconditionName = "POST 64 conns, with precondition";
    const conditional = await cannon(preconditionName, {
      connections: 64,
      duration: seconds,
      requests: singleBodies(true),
    });
    storedAtLeast += conditional.result["2xx"];
    measurements.push(
      cannonMeasurement(
        preconditionName,
        conditional,
        1,
        Math.round(post64.eventsPerSecond * PRECONDITION_TARGET_FRACTION),
      ),
    );
    const batchName = `batch POST ${BATCH_EVENTS}/req`;
    const batch = await cannon(batchName, {
      connections: BATCH_CONNECTIONS,
      duration: seconds,
      requests: batchBodies(),
    });
    storedAtLeast += batch.result["2xx"] * BATCH_EVENTS;
    measurements.push(
      cannonMeasurement(
        batchName,
        batch,
        BATCH_EVENTS,
        raw === undefined ? undefined : Math.round(raw.multi.rowsPerSecond * BATCH_TARGET_FRACTION),
      ),
    );

    const verification = await verify(server, store.count, storedAtLeast);

    const header = ["run", "events/s", "p50 ms", "p99 ms", "errors/non-2xx", "target", "vs target"];
    const rows = measurements.map((m) => [
      m.name,
      formatRate(m.eventsPerSecond),
      m.p50Ms === undefined ? "-" : m.p50Ms.toFixed(2),
      m.p99Ms === undefined ? "-" : m.p99Ms.toFixed(2),
      m.errors === undefined && m.non2xx === undefined ? "-" : `${m.errors ?? "-"}/${m.non2xx ?? "-"}`,
      m.target === undefined ? "-" : `>= ${formatRate(m.target)}`,
      m.ok === undefined ? "-" : m.ok ? "ok" : "below",
    ]);
    const machine = { ...machineInfo(), store: store.label };
    const lines = [
      "",
      `ingest: ${seconds} s per run, ${DATA_BYTES}-byte data, ${store.label}, ` +
        `${machine.cpus} × ${machine.cpuModel}, Node ${machine.node}`,
      "",
      formatTable(header, rows),
      "",
      raw === undefined
        ? "batch: no target (the target is relative to MariaDB's raw INSERT ceiling)"
        : `batch target = ${BATCH_TARGET_FRACTION * 100} % of the raw ${RAW_STATEMENT_ROWS}-row INSERT ceiling measured in this run`,
      `precondition target = ${PRECONDITION_TARGET_FRACTION * 100} % of POST 64 conns in this run ` +
        `(${formatPercent(measurements, preconditionName, "POST 64 conns")} of it measured)`,
      `reference: ${REFERENCE}`,
      `verify: GET /events?limit=1 ${verification.getStatus} (${verification.getEvents} event); ` +
        `stored events ${formatRate(verification.stored)} >= 2xx events ${formatRate(storedAtLeast)}: ` +
        (verification.ok ? "ok" : "MISMATCH"),
      `server log lines at warn or above: ${server.logLines().length}`,
    ];
    process.stdout.write(`${lines.join("\n")}\n`);

    const file = await writeResults("ingest", {
      suite: "ingest",
      finishedAt: new Date().toISOString(),
      secondsPerRun: seconds,
      warmup: { connections: WARMUP_CONNECTIONS, seconds: WARMUP_SECONDS, "2xx": warmup["2xx"] },
      machine,
      raw,
      measurements,
      targets: {
        post1Conn: TARGET_1_CONN,
        post64Conns: TARGET_64_CONNS,
        batchFractionOfRawCeiling: BATCH_TARGET_FRACTION,
        preconditionFractionOfPost64Conns: PRECONDITION_TARGET_FRACTION,
      },
      reference: REFERENCE,
      verification: { ...verification, storedAtLeast },
      serverLog: server.logLines(),
      table: formatTable(header, rows),
    });
    process.stdout.write(`results: ${path.relative(process.cwd(), file)}\n`);
    if (!verification.ok) throw new Error("stored event count is below the 2xx count");
  } finally {
    await cleanup.run();
    removeSignalHandlers();
  }
}

export type CannonOptions = { connections: number; duration: number; requests: Request[] };

/** An autocannon result and every response time in ms (non-2xx included, as autocannon does). */
export type CannonRun = { result: Result; latencies: number[] };

/**
 * One autocannon run of POST /events (bodies from `options.requests`); `track` gets the running
 * instance, then undefined, so that a cleanup step can stop it.
 */
export async function runCannon(
  server: ServerProcess,
  title: string,
  options: CannonOptions,
  track: (instance: Instance | undefined) => void = () => {},
): Promise<CannonRun> {
  process.stderr.write(`bench: ${title}: ${options.connections} connections for ${options.duration} s\n`);
  const instance = autocannon({
    url: `${server.url}/events`,
    method: "POST",
    headers: { "content-type": "application/json" },
    pipelining: 1,
    title,
    ...options,
  });
  track(instance);
  // autocannon's histogram keeps whole milliseconds; record the exact times for p50/p99.
  const latencies: number[] = [];
  instance.on("response", (_client: unknown, _status: number, _bytes: number, ms: number) => {
    latencies.push(ms);
  });
  try {
    const result = await instance;
    assertAlive(server);
    return { result, latencies };
  } finally {
    track(undefined);
  }
}

function assertAlive(server: ServerProcess): void {
  const exit = server.exitStatus();
  if (exit !== undefined) throw new Error(`the server died during the run (${exit})`);
}

export function rawMeasurement(raw: RawResult) {
  return {
    eventsPerSecond: raw.rowsPerSecond,
    p50Ms: raw.p50Ms,
    p99Ms: raw.p99Ms,
    errors: 0,
    non2xx: undefined,
    events: raw.rows,
    seconds: raw.seconds,
    detail: { statements: raw.statements, latency: "per INSERT statement" },
  };
}

export function cannonMeasurement(
  name: string,
  { result, latencies }: CannonRun,
  eventsPerRequest: number,
  target: number | undefined,
): Measurement {
  const events = result["2xx"] * eventsPerRequest;
  const eventsPerSecond = result.duration > 0 ? events / result.duration : 0;
  return {
    name,
    eventsPerSecond,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    errors: result.errors,
    non2xx: result.non2xx,
    target,
    ok: target === undefined ? undefined : eventsPerSecond >= target,
    events,
    seconds: result.duration,
    detail: {
      connections: result.connections,
      eventsPerRequest,
      requestsPerSecondAverage: result.requests.average,
      completedRequests: result.requests.total,
      sentRequests: result.requests.sent,
      "2xx": result["2xx"],
      timeouts: result.timeouts,
      statusCodes: result.statusCodeStats,
      autocannonLatencyMs: {
        average: result.latency.average,
        p50: result.latency.p50,
        p90: result.latency.p90,
        p99: result.latency.p99,
        max: result.latency.max,
      },
    },
  };
}

function simpleEvent(k: number): Record<string, string> {
  return {
    source: "bench",
    type: "bench.created",
    subject: `bench/${k % SUBJECTS}`,
    data: randomBytes(DATA_BYTES).toString("base64"),
  };
}

/**
 * A few single-event bodies, so subjects and data vary between requests; `withPrecondition`: each
 * with an EventsDB-Preconditions header, isSubjectPopulated on its own subject.
 */
export function singleBodies(withPrecondition = false): Request[] {
  return Array.from({ length: DISTINCT_BODIES }, (_, k) => {
    const event = simpleEvent(k);
    const body = JSON.stringify(event);
    if (!withPrecondition) return { body };
    const precondition = [{ type: "isSubjectPopulated", payload: { subject: event.subject } }];
    return {
      body,
      headers: { "content-type": "application/json", "eventsdb-preconditions": JSON.stringify(precondition) },
    };
  });
}

/** One row's events/s as a percentage of another's, e.g. "93 %". */
function formatPercent(measurements: readonly Measurement[], name: string, of: string): string {
  const a = measurements.find((m) => m.name === name)?.eventsPerSecond;
  const b = measurements.find((m) => m.name === of)?.eventsPerSecond;
  return a === undefined || b === undefined || b === 0 ? "-" : `${Math.round((a / b) * 100)} %`;
}

/** A few batch bodies of BATCH_EVENTS simple events each. */
export function batchBodies(): Request[] {
  return Array.from({ length: BATCH_BODIES }, (_, b) => ({
    body: JSON.stringify(Array.from({ length: BATCH_EVENTS }, (_, i) => simpleEvent(b * BATCH_EVENTS + i))),
  }));
}

/** `YYYY-MM-DD HH:MM:SS.mmm` in UTC, as DATETIME(6) takes it. */
export function sqlTime(date: Date): string {
  return date.toISOString().replace("T", " ").replace("Z", "");
}

type RawRow = [number, string, string, string, string, Buffer];

export function rawRow(id: number, time: string): RawRow {
  return [id, "bench", "bench.created", `bench/${id % SUBJECTS}`, time, randomBytes(DATA_BYTES)];
}

const RAW_INSERT = "INSERT INTO events (id, source, type, subject, time, data) VALUES";

/**
 * The ceiling the server is measured against: same table, one connection, autocommit, explicit
 * ids; first RAW_ROWS rows as RAW_STATEMENT_ROWS-row INSERTs, then single-row INSERTs for a few s.
 */
export async function rawInserts(connection: Connection): Promise<{ multi: RawResult; single: RawResult }> {
  await connection.query("CREATE DATABASE raw");
  await connection.query("USE raw");
  await connection.query(await readFile(path.join(ROOT, "sql", "mysql", "001_events.sql"), "utf8"));
  await connection.query("SET autocommit = 1");
  const time = sqlTime(new Date());

  const statements: RawRow[][] = [];
  for (let start = 1; start <= RAW_ROWS; start += RAW_STATEMENT_ROWS) {
    const count = Math.min(RAW_STATEMENT_ROWS, RAW_ROWS - start + 1);
    statements.push(Array.from({ length: count }, (_, i) => rawRow(start + i, time)));
  }
  const multiLatencies: number[] = [];
  const multiStart = performance.now();
  for (const rows of statements) {
    const t0 = performance.now();
    await connection.query(`${RAW_INSERT} ?`, [rows]);
    multiLatencies.push(performance.now() - t0);
  }
  const multiSeconds = (performance.now() - multiStart) / 1000;

  const single = await rawSingleInserts(connection, RAW_ROWS + 1, SINGLE_ROW_SECONDS);

  const [countRows] = await connection.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM events");
  const stored = Number(countRows[0]?.n);
  if (stored !== RAW_ROWS + single.rows) {
    throw new Error(`raw table holds ${stored} rows, expected ${RAW_ROWS + single.rows}`);
  }
  await connection.query("USE eventsdb");
  return { multi: rawResult(RAW_ROWS, multiSeconds, multiLatencies), single };
}

/**
 * Single-row autocommit INSERTs, one after the other, for `seconds`, into the current database's
 * events table (the raw one rawInserts makes), ids from `firstId`: what the Go service does per
 * request. `npm run bench -- onecon` runs it again between its server runs.
 */
export async function rawSingleInserts(connection: Connection, firstId: number, seconds: number) {
  const time = sqlTime(new Date());
  const latencies: number[] = [];
  let id = firstId;
  const start = performance.now();
  const end = start + seconds * 1000;
  let now = start;
  while (now < end) {
    await connection.query(`${RAW_INSERT} (?, ?, ?, ?, ?, ?)`, rawRow(id++, time));
    const after = performance.now();
    latencies.push(after - now);
    now = after;
  }
  return rawResult(latencies.length, (now - start) / 1000, latencies);
}

function rawResult(rows: number, seconds: number, latencies: number[]): RawResult {
  return {
    rows,
    statements: latencies.length,
    seconds,
    rowsPerSecond: rows / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}

/** GET /events?limit=1 answers, and the table holds at least every event acknowledged with 2xx. */
/** Events in the server's MariaDB database, counted over an admin connection. */
export async function mysqlEventCount(admin: Connection): Promise<number> {
  const [rows] = await admin.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM eventsdb.events");
  return Number(rows[0]?.n);
}

export async function verify(server: ServerProcess, count: () => Promise<number>, storedAtLeast: number) {
  const response = await fetch(`${server.url}/events?limit=1`, { signal: AbortSignal.timeout(10_000) });
  const body = (await response.json()) as { events?: unknown[] };
  const getEvents = Array.isArray(body.events) ? body.events.length : 0;
  const stored = await count();
  return {
    getStatus: response.status,
    getEvents,
    stored,
    ok: response.status === 200 && getEvents === 1 && stored >= storedAtLeast,
  };
}
