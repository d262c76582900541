import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import type { Instance } from "autocannon";
import { Scrape, scrapeMetrics } from "../test/support/metrics.js";
import type { ServerProcess } from "../test/support/process.js";
import type { LoadClient, LoadConfig, LoadMessage, LoadMethod, LoadResult } from "./grpc-load.js";
import { H2LOAD_PACKAGE, h2loadVersion, startH2load, writeBodies } from "./h2load.js";
import {
  BATCH_CONNECTIONS,
  BATCH_EVENTS,
  BATCH_TARGET_FRACTION,
  batchBodies,
  type CannonOptions,
  cannonMeasurement,
  DATA_BYTES,
  type Measurement,
  mysqlEventCount,
  RAW_STATEMENT_ROWS,
  rawInserts,
  rawMeasurement,
  runCannon,
  SUBJECTS,
  singleBodies,
  TARGET_64_CONNS,
  verify,
} from "./ingest.js";
import {
  Cleanup,
  CpuMeter,
  checkArguments,
  clockTicksPerSecond,
  formatRate,
  formatTable,
  machineInfo,
  nodeArgs,
  parseCountOption,
  parseDuration,
  percentile,
  ROOT,
  serverEnv,
  sleep,
  startBenchDatabase,
  startServerChild,
  textOption,
  writeResults,
} from "./support.js";

const DEFAULT_SECONDS = 10;
const WARMUP_SECONDS = 2;
const WARMUP_STREAMS = 16;
/** Connections of the "several connections" rows, and load processes they are spread over. */
const DEFAULT_CONNECTIONS = 8;
const DEFAULT_PROCESSES = 2;
const DEFAULT_RETRIES = 2;
const UNARY_STREAMS = [16, 64] as const;
/** Concurrent unary calls the unary target is for. */
const TARGET_STREAMS = 64;
/** Concurrent CreateEvents calls (as many as the REST batch run's connections). */
const BATCH_CALLS = BATCH_CONNECTIONS;
const REST_CONNECTIONS = 64;

const TARGET_UNARY = 14_000;
/** A load process this busy (fraction of one core) may itself be what limits the rate. */
const CLIENT_BOUND_CPU = 0.9;
/** Cores used by other processes during a run from which the figures are marked unreliable. */
const OTHER_CPU_WARNING = 0.2;
const LOAD_READY_TIMEOUT_MS = 30_000;
const LOAD_RESULT_GRACE_MS = 60_000;
const LOAD_EXIT_TIMEOUT_MS = 5_000;
const LOAD_SCRIPT = path.join(ROOT, "bench", "grpc-load.ts");
/** The warning every open (no AUTH_TOKEN) server logs at start; not worth reporting. */
const EXPECTED_LOG = "AUTH_TOKEN is not set";

const OPTION_FLAGS = ["--duration", "--connections", "--processes", "--retries", "--only"] as const;
const SWITCHES = ["--no-h2load", "--no-grpc-js", "--no-bare"] as const;

interface Options {
  seconds: number;
  connections: number;
  processes: number;
  /** Repeats of a run that other processes disturbed (CPU other >= OTHER_CPU_WARNING). */
  retries: number;
  /** h2load rows (the targets' load generator); without it the Node clients' rows carry the targets. */
  h2load: boolean;
  grpcJs: boolean;
  bare: boolean;
  /** Runs only the rows whose name contains this text (the raw ceiling always runs). */
  only: string | undefined;
}

function parseOptions(args: readonly string[]): Options {
  checkArguments("grpc", args, OPTION_FLAGS, SWITCHES);
  return {
    seconds: parseDuration(args, DEFAULT_SECONDS),
    connections: parseCountOption(args, "--connections", DEFAULT_CONNECTIONS, 2),
    processes: parseCountOption(args, "--processes", DEFAULT_PROCESSES, 1),
    retries: parseCountOption(args, "--retries", DEFAULT_RETRIES, 0),
    h2load: !args.includes("--no-h2load"),
    grpcJs: !args.includes("--no-grpc-js"),
    bare: !args.includes("--no-bare"),
    only: textOption(args, "--only"),
  };
}

/** A results row: ingest's measurement plus where the CPU went and how the writer grouped commits. */
interface Row extends Measurement {
  transport:
    | "gRPC (h2load)"
    | "gRPC (connect-node)"
    | "gRPC (grpc-js)"
    | "gRPC (bare node:http2)"
    | "REST (autocannon)"
    | "raw mysql2";
  /**
   * Fractions of one core over the run: server, MariaDB, each load process (or this process), and
   * everything else on the machine (other users' work makes the figures unreliable).
   */
  cpu?: { server: number; mariadb: number; clients: number[]; other: number };
  /** Event-loop utilisation of each load process (or of this process for autocannon). */
  clientLoop?: number[];
  writer?: WriterDelta;
  /** Events acknowledged in all (warm-up calls and the tail after the window included). */
  acknowledged: number;
  /** Which attempt was kept, of how many (see --retries); absent for single runs. */
  attempt?: { kept: number; of: number; otherCpu: number[] };
}

interface WriterDelta {
  commits: number;
  eventsPerCommit: number;
  commitMsAverage: number;
  commitsPerSecond: number;
}

interface Context {
  readonly server: ServerProcess;
  readonly mariadbPid: number;
  readonly ticks: number;
  /** Load processes and h2load runs, ended by the cleanup when a run fails. */
  readonly loads: Set<{ kill(): Promise<void> }>;
  /** The framed request bodies h2load sends. */
  readonly bodies: { single: string; batch: string };
  /** A temp dir for h2load's request logs. */
  readonly dir: string;
  readonly setCannon: (instance: Instance | undefined) => void;
}

/**
 * `npm run bench -- grpc [--duration S] [--connections N] [--processes N] [--retries N] [--only TEXT]
 * [--no-h2load] [--no-grpc-js] [--no-bare]`: gRPC ingest (unary CreateEvent, CreateEvents of 500)
 * against a throwaway MariaDB, beside the REST figures of the same shapes and the raw 500-row
 * INSERT ceiling, all in one run.
 *
 * The targets are measured with h2load (nghttp2's C load generator, a few percent of a core):
 * unary closed-loop callers (16 and 64) over one HTTP/2 connection and over --connections (8),
 * and 4 concurrent CreateEvents of 500 over one connection and over four. The same shapes with Node
 * gRPC clients follow for reference: @connectrpc/connect-node (over --processes load processes
 * when several connections), grpc-js (an independent peer) and a bare node:http2 client; on a
 * 2-core machine those clients need as much CPU as the server, which their CPU column shows.
 * A run that other processes disturbed (>= 20 % of a core) is repeated, at most --retries (2) times.
 * Diagnosis: BENCH_SERVER_NODE_ARGS (server) and BENCH_LOAD_NODE_ARGS (load processes).
 */
export async function runGrpc(args: readonly string[]): Promise<void> {
  const options = parseOptions(args);
  const { seconds } = options;
  const cleanup = new Cleanup();
  const removeSignalHandlers = cleanup.onSignals();
  try {
    if (options.h2load && (await h2loadVersion()) === undefined) {
      throw new Error(
        `grpc: h2load is not installed (Debian: apt-get install -y ${H2LOAD_PACKAGE}); ` +
          "or run with --no-h2load (the Node clients' rows then carry the targets)",
      );
    }
    const dir = await mkdtemp(path.join(os.tmpdir(), "eventsdb-bench-grpc-"));
    cleanup.add("remove temp dir", () => rm(dir, { recursive: true, force: true }));
    const { mariadb, admin, mariadbVersion } = await startBenchDatabase(cleanup);

    process.stderr.write(`bench: raw ceiling: ${RAW_STATEMENT_ROWS}-row INSERTs, then single-row INSERTs\n`);
    const raw = await rawInserts(admin);

    process.stderr.write("bench: starting the server\n");
    const server = await startServerChild(serverEnv(mariadb.url));
    cleanup.add("stop server", () => server.stop());

    let cannon: Instance | undefined;
    const loads = new Set<{ kill(): Promise<void> }>();
    cleanup.add("stop load", async () => {
      cannon?.stop();
      await Promise.all([...loads].map((load) => load.kill()));
    });
    const ctx: Context = {
      server,
      mariadbPid: mariadb.pid,
      ticks: await clockTicksPerSecond(),
      loads,
      bodies: await writeBodies(dir, {
        dataBytes: DATA_BYTES,
        subjects: SUBJECTS,
        batchEvents: BATCH_EVENTS,
      }),
      dir,
      setCannon: (instance) => {
        cannon = instance;
      },
    };

    const unary = (client: LoadClient, streams: number, connections: number) => ({
      name: `${CLIENT_NAMES[client]} CreateEvent ${streams} streams, ${connectionsLabel(connections)}`,
      client,
      method: "CreateEvent" as const,
      connections,
      concurrency: streams,
      processes: connections === 1 ? 1 : Math.min(options.processes, connections),
      seconds,
    });

    // Warm-up (not in the table): JIT, pools and MariaDB's buffers for both paths.
    const warmGrpc = await grpcRun(ctx, {
      ...unary("connect", WARMUP_STREAMS, 1),
      name: "warm-up gRPC",
      seconds: WARMUP_SECONDS,
    });
    const warmRest = await restRun(ctx, "warm-up REST", {
      connections: WARMUP_STREAMS,
      duration: WARMUP_SECONDS,
      requests: singleBodies(),
    });
    let acknowledged = warmGrpc.acknowledged + warmRest.acknowledged;

    const rows: Row[] = [
      { name: "raw single-row INSERT (rows/s)", ...rawMeasurement(raw.single), ...RAW_ROW },
      {
        name: `raw ${RAW_STATEMENT_ROWS}-row INSERT ceiling (rows/s)`,
        ...rawMeasurement(raw.multi),
        ...RAW_ROW,
      },
    ];
    /**
     * Runs a measurement; while other processes took >= OTHER_CPU_WARNING of a core during it, runs
     * it again (at most --retries times) and keeps the least disturbed attempt.
     */
    const add = async (name: string, run: () => Promise<Row>) => {
      if (options.only !== undefined && !name.includes(options.only)) return;
      const attempts: Row[] = [];
      for (let attempt = 1; attempt <= options.retries + 1; attempt++) {
        const row = await run();
        acknowledged += row.acknowledged;
        attempts.push(row);
        if ((row.cpu?.other ?? 0) < OTHER_CPU_WARNING) break;
        if (attempt <= options.retries) {
          process.stderr.write(
            `bench: ${row.name}: other processes used ${percent(row.cpu?.other ?? 0)} of a core; again\n`,
          );
        }
      }
      const otherCpu = attempts.map((row) => row.cpu?.other ?? 0);
      const kept = otherCpu.indexOf(Math.min(...otherCpu));
      const best = attempts[kept] as Row;
      if (attempts.length > 1) best.attempt = { kept: kept + 1, of: attempts.length, otherCpu };
      rows.push(best);
    };

    // ---- unary CreateEvent ---------------------------------------------------------------------
    // The targets' rows: h2load, at 16 and 64 calls, over one connection and over several.
    const unaryTarget = (streams: number) => (streams === TARGET_STREAMS ? TARGET_UNARY : undefined);
    if (options.h2load) {
      for (const connections of [1, options.connections]) {
        for (const streams of UNARY_STREAMS) {
          const spec: H2loadRunSpec = {
            name: `h2load CreateEvent ${streams} streams, ${connectionsLabel(connections)}`,
            method: "CreateEvent",
            connections,
            concurrency: streams,
            seconds,
            target: unaryTarget(streams),
          };
          await add(spec.name, () => h2loadRun(ctx, spec));
        }
      }
    }
    // The same with Node gRPC clients (all of them with --no-h2load, then with the targets).
    const nodeTarget = (streams: number) => (options.h2load ? undefined : unaryTarget(streams));
    for (const connections of [1, options.connections]) {
      for (const streams of options.h2load ? [TARGET_STREAMS] : UNARY_STREAMS) {
        const spec = { ...unary("connect", streams, connections), target: nodeTarget(streams) };
        await add(spec.name, () => grpcRun(ctx, spec));
      }
    }
    if (options.grpcJs) {
      const spec = { ...unary("grpc-js", TARGET_STREAMS, 1), target: nodeTarget(TARGET_STREAMS) };
      await add(spec.name, () => grpcRun(ctx, spec));
    }
    if (options.bare) {
      const spec = { ...unary("h2", TARGET_STREAMS, 1), target: nodeTarget(TARGET_STREAMS) };
      await add(spec.name, () => grpcRun(ctx, spec));
    }
    const restName = `REST POST ${REST_CONNECTIONS} conns`;
    await add(restName, () =>
      restRun(
        ctx,
        restName,
        { connections: REST_CONNECTIONS, duration: seconds, requests: singleBodies() },
        1,
        TARGET_64_CONNS,
      ),
    );

    // ---- CreateEvents of 500 ---------------------------------------------------------------------
    const batchTarget = Math.round(raw.multi.rowsPerSecond * BATCH_TARGET_FRACTION);
    const batchName = (client: string, connections: number) =>
      `${client} CreateEvents ${BATCH_EVENTS}/req, ${BATCH_CALLS} calls, ${connectionsLabel(connections)}`;
    if (options.h2load) {
      for (const connections of [1, BATCH_CALLS]) {
        const spec: H2loadRunSpec = {
          name: batchName("h2load", connections),
          method: "CreateEvents",
          connections,
          concurrency: BATCH_CALLS,
          seconds,
          target: batchTarget,
        };
        await add(spec.name, () => h2loadRun(ctx, spec));
      }
    }
    for (const connections of options.h2load ? [BATCH_CALLS] : [1, BATCH_CALLS]) {
      const name = batchName(CLIENT_NAMES.connect, connections);
      await add(name, () =>
        grpcRun(ctx, {
          name,
          client: "connect",
          method: "CreateEvents",
          connections,
          concurrency: BATCH_CALLS,
          processes: connections === 1 ? 1 : Math.min(options.processes, connections),
          seconds,
          target: options.h2load ? undefined : batchTarget,
        }),
      );
    }
    const restBatchName = `REST batch POST ${BATCH_EVENTS}/req, ${BATCH_CONNECTIONS} conns`;
    await add(restBatchName, () =>
      restRun(
        ctx,
        restBatchName,
        { connections: BATCH_CONNECTIONS, duration: seconds, requests: batchBodies() },
        BATCH_EVENTS,
        batchTarget,
      ),
    );

    const verification = await verify(server, () => mysqlEventCount(admin), acknowledged);

    const header = [
      "run",
      "events/s",
      "p50 ms",
      "p99 ms",
      "errors",
      "target",
      "vs target",
      "CPU srv",
      "CPU db",
      "CPU client",
      "CPU other",
      "srv µs/ev",
      "ev/commit",
    ];
    const cells = rows.map(tableCells);
    const table = formatTable(header, cells);
    const machine = { ...machineInfo(), mariadb: mariadbVersion };
    const clientNotes = rows.flatMap((row) => {
      if (!row.transport.startsWith("gRPC") || row.cpu === undefined) return [];
      const clients = row.cpu.clients;
      const total = clients.reduce((a, b) => a + b, 0);
      if (clients.some((c) => c >= CLIENT_BOUND_CPU)) {
        return [
          `note: ${row.name}: a load process used >= ${percent(CLIENT_BOUND_CPU)} of a core; the client may be the limit`,
        ];
      }
      if (total >= row.cpu.server) {
        return [
          `note: ${row.name}: the clients used more CPU (${percent(total)}) than the server (${percent(row.cpu.server)}); ` +
            `on this machine they share the cores, so the client's CPU is part of what limits the rate`,
        ];
      }
      return [];
    });
    const busy = rows.filter((row) => (row.cpu?.other ?? 0) >= OTHER_CPU_WARNING);
    const unexpectedLog = server.logLines().filter((line) => !line.includes(EXPECTED_LOG));
    const lines = [
      "",
      `grpc: ${seconds} s per run, ${DATA_BYTES}-byte data, ${SUBJECTS} subjects, MariaDB ${mariadbVersion} ` +
        `(innodb_flush_log_at_trx_commit=1), ${machine.cpus} × ${machine.cpuModel}, Node ${machine.node}`,
      `gRPC clients: h2load (nghttp2, C; one thread; the targets' rows) sends one prepared request body ` +
        `(one event, or ${BATCH_EVENTS} events over ${SUBJECTS} subjects), failures counted by the server; ` +
        `connect-node: createGrpcTransport, one Http2SessionManager per connection, several connections ` +
        `spread over ${options.processes} load processes; grpc-js: one channel; node:http2: gRPC framing by hand`,
      "",
      table,
      "",
      `CPU: % of one core over the run (client = each load process, or this process for autocannon; ` +
        `other = the rest of the machine); srv µs/ev: server CPU per event stored; ` +
        `ev/commit: events per group commit of the server's writer`,
      `batch target = ${BATCH_TARGET_FRACTION * 100} % of the raw ${RAW_STATEMENT_ROWS}-row INSERT ceiling measured in this run`,
      ...(busy.length > 0
        ? [
            `WARNING: other processes used >= ${percent(OTHER_CPU_WARNING)} of a core during ${busy.length} run(s) ` +
              `(CPU other); those figures understate what the server can do on an otherwise idle machine`,
          ]
        : []),
      ...rows.flatMap((row) =>
        row.attempt === undefined
          ? []
          : [
              `note: ${row.name}: attempt ${row.attempt.kept} of ${row.attempt.of} kept (CPU other ` +
                `${row.attempt.otherCpu.map(percent).join(", ")})`,
            ],
      ),
      ...clientNotes,
      `verify: GET /events?limit=1 ${verification.getStatus} (${verification.getEvents} event); ` +
        `stored events ${formatRate(verification.stored)} >= acknowledged events ${formatRate(acknowledged)}: ` +
        (verification.ok ? "ok" : "MISMATCH"),
      `server log lines at warn or above: ${server.logLines().length}` +
        (unexpectedLog.length > 0 ? ` (${unexpectedLog.length} besides the open-API warning)` : ""),
      ...unexpectedLog.slice(0, 10).map((line) => `  ${line}`),
    ];
    process.stdout.write(`${lines.join("\n")}\n`);

    const file = await writeResults("grpc", {
      suite: "grpc",
      finishedAt: new Date().toISOString(),
      secondsPerRun: seconds,
      options,
      warmup: { seconds: WARMUP_SECONDS, grpc: warmGrpc, rest: warmRest },
      machine,
      raw,
      measurements: rows,
      targets: {
        unary64: TARGET_UNARY,
        restPost64Conns: TARGET_64_CONNS,
        batchFractionOfRawCeiling: BATCH_TARGET_FRACTION,
        batch: batchTarget,
      },
      verification: { ...verification, acknowledged },
      serverLog: server.logLines(),
      table,
    });
    process.stdout.write(`results: ${path.relative(process.cwd(), file)}\n`);
    if (!verification.ok) throw new Error("stored event count is below the acknowledged count");
  } finally {
    await cleanup.run();
    removeSignalHandlers();
  }
}

function connectionsLabel(connections: number): string {
  return connections === 1 ? "1 conn" : `${connections} conns`;
}

/** The raw rows go to a database of their own (`raw`), not to the server's events. */
const RAW_ROW: Pick<Row, "target" | "ok" | "transport" | "acknowledged"> = {
  target: undefined,
  ok: undefined,
  transport: "raw mysql2",
  acknowledged: 0,
};

function percent(fraction: number): string {
  return `${Math.round(fraction * 100)}%`;
}

function tableCells(row: Row): string[] {
  const errors =
    row.errors === undefined && row.non2xx === undefined
      ? "-"
      : String((row.errors ?? 0) + (row.non2xx ?? 0));
  return [
    row.name,
    formatRate(row.eventsPerSecond),
    row.p50Ms === undefined ? "-" : row.p50Ms.toFixed(2),
    row.p99Ms === undefined ? "-" : row.p99Ms.toFixed(2),
    errors,
    row.target === undefined ? "-" : `>= ${formatRate(row.target)}`,
    row.ok === undefined ? "-" : row.ok ? "ok" : "below",
    row.cpu === undefined ? "-" : percent(row.cpu.server),
    row.cpu === undefined ? "-" : percent(row.cpu.mariadb),
    row.cpu === undefined ? "-" : row.cpu.clients.map(percent).join("+"),
    row.cpu === undefined ? "-" : percent(row.cpu.other),
    row.cpu === undefined || row.eventsPerSecond === 0
      ? "-"
      : ((row.cpu.server * 1e6) / row.eventsPerSecond).toFixed(0),
    row.writer === undefined || !Number.isFinite(row.writer.eventsPerCommit)
      ? "-"
      : row.writer.eventsPerCommit.toFixed(1),
  ];
}

// ---- gRPC runs ------------------------------------------------------------------------------------

interface GrpcRunSpec {
  name: string;
  client: LoadClient;
  method: LoadMethod;
  /** HTTP/2 connections in all, spread evenly over the processes. */
  connections: number;
  /** Concurrent calls in all, spread evenly over the connections. */
  concurrency: number;
  processes: number;
  seconds: number;
  target?: number;
}

async function grpcRun(ctx: Context, spec: GrpcRunSpec): Promise<Row> {
  const { name, connections, concurrency, processes } = spec;
  if (concurrency < connections || connections < processes) {
    throw new Error(
      `${name}: ${concurrency} calls over ${connections} connections in ${processes} processes`,
    );
  }
  // Connections as evenly as possible over the processes, calls over the connections.
  const connectionStreams = spread(concurrency, connections);
  const perProcess = spread(connections, processes);
  process.stderr.write(
    `bench: ${name}: ${spec.client} ${spec.method}, ${concurrency} concurrent over ${connections} ` +
      `connection(s) in ${processes} process(es) for ${spec.seconds} s\n`,
  );
  const eventsPerCall = spec.method === "CreateEvents" ? BATCH_EVENTS : 1;
  const handles = Array.from({ length: processes }, (_, seed) =>
    startLoad({
      client: spec.client,
      method: spec.method,
      port: ctx.server.grpcPort,
      streams: connectionStreams.splice(0, perProcess[seed] ?? 0),
      batchEvents: BATCH_EVENTS,
      dataBytes: DATA_BYTES,
      subjects: SUBJECTS,
      durationMs: spec.seconds * 1000,
      seed,
    }),
  );
  for (const handle of handles) ctx.loads.add(handle);
  try {
    await withTimeout(Promise.all(handles.map((h) => h.ready)), LOAD_READY_TIMEOUT_MS, `${name}: load ready`);
    const before = await writerCounters(ctx.server);
    const pids: Record<string, number> = { server: ctx.server.pid, mariadb: ctx.mariadbPid };
    handles.forEach((handle, i) => {
      pids[`client${i}`] = handle.pid;
    });
    const meter = new CpuMeter(pids, ctx.ticks);
    await meter.start();
    for (const handle of handles) handle.start();
    const results = await withTimeout(
      Promise.all(handles.map((h) => h.result)),
      spec.seconds * 1000 + LOAD_RESULT_GRACE_MS,
      `${name}: load results`,
    );
    const cpu = await meter.stop();
    const after = await writerCounters(ctx.server);
    assertAlive(ctx.server);
    return grpcRow(spec, results, eventsPerCall, {
      cpu: cpuColumns(
        cpu,
        handles.map((_, i) => `client${i}`),
      ),
      writer: writerDelta(before, after, spec.seconds),
    });
  } finally {
    await Promise.all(handles.map((handle) => handle.stop()));
    for (const handle of handles) ctx.loads.delete(handle);
  }
}

/** How a client is named in the rows. */
const CLIENT_NAMES = {
  connect: "connect-node",
  "grpc-js": "grpc-js",
  h2: "node:http2",
} as const satisfies Record<LoadClient, string>;

const TRANSPORTS = {
  connect: "gRPC (connect-node)",
  "grpc-js": "gRPC (grpc-js)",
  h2: "gRPC (bare node:http2)",
} as const satisfies Record<LoadClient, Row["transport"]>;

function grpcRow(
  spec: GrpcRunSpec,
  results: LoadResult[],
  eventsPerCall: number,
  extra: Pick<Row, "cpu" | "writer">,
): Row {
  const events = results.reduce((sum, r) => sum + r.events, 0);
  const seconds = spec.seconds;
  const latencies = results.flatMap((r) => Array.from(r.latencies));
  const errors = results.reduce((sum, r) => sum + r.errors, 0);
  const errorCodes: Record<string, number> = {};
  for (const r of results) {
    for (const [code, n] of Object.entries(r.errorCodes)) errorCodes[code] = (errorCodes[code] ?? 0) + n;
  }
  const eventsPerSecond = events / seconds;
  return {
    name: spec.name,
    transport: TRANSPORTS[spec.client],
    eventsPerSecond,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    errors,
    non2xx: undefined,
    target: spec.target,
    ok: spec.target === undefined ? undefined : eventsPerSecond >= spec.target,
    events,
    seconds,
    acknowledged: results.reduce((sum, r) => sum + r.acknowledged, 0),
    clientLoop: results.map((r) => r.eventLoopUtilization),
    ...extra,
    detail: {
      method: spec.method,
      connections: spec.connections,
      concurrentCalls: spec.concurrency,
      processes: spec.processes,
      eventsPerCall,
      calls: results.reduce((sum, r) => sum + r.calls, 0),
      errorCodes,
      errorSamples: results.flatMap((r) => r.errorSamples),
      perProcessEventsPerSecond: results.map((r) => r.events / r.seconds),
      latencyMs: latencySummary(latencies),
    },
  };
}

/** Average, p90 and max of a run's latencies (a loop: a spread of 10^5 numbers overflows the stack). */
function latencySummary(latencies: readonly number[]): { average: number; p90: number; max: number } {
  let sum = 0;
  let max = 0;
  for (const latency of latencies) {
    sum += latency;
    if (latency > max) max = latency;
  }
  return {
    average: latencies.length === 0 ? 0 : sum / latencies.length,
    p90: percentile(latencies, 90),
    max,
  };
}

// ---- h2load runs -----------------------------------------------------------------------------------

const H2LOAD_WARMUP_SECONDS = 1;
/** The CPU window closes this long before h2load's end, while it can still be read. */
const H2LOAD_METER_MARGIN_MS = 300;

interface H2loadRunSpec {
  name: string;
  method: LoadMethod;
  connections: number;
  /** Concurrent calls in all, the same number on every connection. */
  concurrency: number;
  seconds: number;
  target?: number;
}

/**
 * One h2load run: a warm-up second, then the measured window (CPU and writer counters sampled
 * inside it). h2load sees HTTP status only, so failed calls are taken from the server's
 * operation counters and subtracted from h2load's successes.
 */
async function h2loadRun(ctx: Context, spec: H2loadRunSpec): Promise<Row> {
  const { name, connections, concurrency, seconds } = spec;
  if (concurrency % connections !== 0) {
    throw new Error(`${name}: ${concurrency} calls do not spread evenly over ${connections} connections`);
  }
  process.stderr.write(
    `bench: ${name}: h2load ${spec.method}, ${concurrency} concurrent over ${connections} connection(s) ` +
      `for ${seconds} s after ${H2LOAD_WARMUP_SECONDS} s of warm-up\n`,
  );
  const operation = spec.method === "CreateEvents" ? "create_events" : "create_event";
  const eventsPerCall = spec.method === "CreateEvents" ? BATCH_EVENTS : 1;
  const failuresBefore = await serverFailures(ctx.server, operation);
  // h2load appends to its log: a fresh file per run.
  const logFile = path.join(ctx.dir, "h2load.log");
  await rm(logFile, { force: true });
  const handle = startH2load({
    port: ctx.server.grpcPort,
    method: spec.method,
    bodyFile: spec.method === "CreateEvents" ? ctx.bodies.batch : ctx.bodies.single,
    connections,
    streamsPerConnection: concurrency / connections,
    warmupSeconds: H2LOAD_WARMUP_SECONDS,
    seconds,
    logFile,
  });
  ctx.loads.add(handle);
  try {
    await sleep(H2LOAD_WARMUP_SECONDS * 1000);
    const before = await writerCounters(ctx.server);
    const meter = new CpuMeter(
      { server: ctx.server.pid, mariadb: ctx.mariadbPid, client0: handle.pid },
      ctx.ticks,
    );
    await meter.start();
    await sleep(seconds * 1000 - H2LOAD_METER_MARGIN_MS);
    const cpu = await meter.stop();
    const after = await writerCounters(ctx.server);
    const result = await withTimeout(handle.result, LOAD_RESULT_GRACE_MS, `${name}: h2load result`);
    assertAlive(ctx.server);
    const failed = (await serverFailures(ctx.server, operation)) - failuresBefore;
    const calls = Math.max(0, result.succeeded - failed);
    const events = calls * eventsPerCall;
    const eventsPerSecond = events / seconds;
    return {
      name,
      transport: "gRPC (h2load)",
      eventsPerSecond,
      p50Ms: percentile(result.latenciesMs, 50),
      p99Ms: percentile(result.latenciesMs, 99),
      errors: failed + result.failed,
      non2xx: undefined,
      target: spec.target,
      ok: spec.target === undefined ? undefined : eventsPerSecond >= spec.target,
      events,
      seconds,
      // Only the measured window's: warm-up calls are stored too, and verify checks stored >= this.
      acknowledged: events,
      cpu: cpuColumns(cpu, ["client0"]),
      writer: writerDelta(before, after, (seconds * 1000 - H2LOAD_METER_MARGIN_MS) / 1000),
      detail: {
        method: spec.method,
        connections,
        concurrentCalls: concurrency,
        eventsPerCall,
        calls,
        httpFailures: result.failed,
        grpcFailures: failed,
        latencyMs: latencySummary(result.latenciesMs),
      },
    };
  } finally {
    await handle.kill();
    ctx.loads.delete(handle);
  }
}

// ---- REST runs (ingest's autocannon run, measured the same way) -----------------------------------

async function restRun(
  ctx: Context,
  name: string,
  options: CannonOptions,
  eventsPerRequest = 1,
  target?: number,
): Promise<Row> {
  const before = await writerCounters(ctx.server);
  const meter = new CpuMeter({ server: ctx.server.pid, mariadb: ctx.mariadbPid }, ctx.ticks);
  await meter.start();
  const elu = performance.eventLoopUtilization();
  const run = await runCannon(ctx.server, name, options, ctx.setCannon);
  const { utilization } = performance.eventLoopUtilization(elu);
  const cpu = await meter.stop();
  const after = await writerCounters(ctx.server);
  return {
    ...cannonMeasurement(name, run, eventsPerRequest, target),
    transport: "REST (autocannon)",
    cpu: cpuColumns(cpu, ["bench"]),
    clientLoop: [utilization],
    writer: writerDelta(before, after, run.result.duration),
    acknowledged: run.result["2xx"] * eventsPerRequest,
  };
}

// ---- server metrics -------------------------------------------------------------------------------

interface WriterCounters {
  commits: number;
  events: number;
  commitSeconds: number;
}

/** The writer's group-commit histograms from GET /metrics (NaN when absent or unreadable). */
async function writerCounters(server: ServerProcess): Promise<WriterCounters> {
  const metrics = await scrapeMetrics(server.url).catch(() => new Scrape(""));
  return {
    commits: metrics.value("eventsdb_writer_batch_events_count"),
    events: metrics.value("eventsdb_writer_batch_events_sum"),
    commitSeconds: metrics.value("eventsdb_writer_commit_duration_seconds_sum"),
  };
}

/** Calls of an operation the server answered with an error (app_event_operations_total). */
async function serverFailures(server: ServerProcess, operation: string): Promise<number> {
  return (await scrapeMetrics(server.url)).counter("app_event_operations_total", {
    operation,
    status: "error",
  });
}

function writerDelta(before: WriterCounters, after: WriterCounters, seconds: number): WriterDelta {
  const commits = after.commits - before.commits;
  return {
    commits,
    eventsPerCommit: (after.events - before.events) / commits,
    commitMsAverage: ((after.commitSeconds - before.commitSeconds) * 1000) / commits,
    commitsPerSecond: commits / seconds,
  };
}

/**
 * A row's CPU columns from a CpuMeter reading: server, MariaDB, the load generators named by
 * `clients` (keys of the reading; "bench" when this process is the client), and the rest.
 */
function cpuColumns(cpu: Record<string, number>, clients: readonly string[]): NonNullable<Row["cpu"]> {
  let measured = 0;
  for (const name of new Set(["server", "mariadb", "bench", ...clients])) measured += cpu[name] ?? 0;
  return {
    server: cpu.server ?? 0,
    mariadb: cpu.mariadb ?? 0,
    clients: clients.map((name) => cpu[name] ?? 0),
    // The machine's busy cores minus those of the processes measured (never below 0).
    other: Math.max(0, (cpu.system ?? 0) - measured),
  };
}

function assertAlive(server: ServerProcess): void {
  const exit = server.exitStatus();
  if (exit !== undefined) throw new Error(`the server died during the run (${exit})`);
}

// ---- load processes -------------------------------------------------------------------------------

interface LoadHandle {
  readonly pid: number;
  /** Resolves once every connection has answered a call. */
  readonly ready: Promise<void>;
  readonly result: Promise<LoadResult>;
  start(): void;
  /** Asks it to exit (after its result) and waits (SIGTERM after a timeout, then SIGKILL). */
  stop(): Promise<void>;
  /** SIGTERM now, SIGKILL after a timeout; waits for the exit. */
  kill(): Promise<void>;
}

function startLoad(config: LoadConfig): LoadHandle {
  const child: ChildProcess = spawn(
    process.execPath,
    ["--import", "tsx", ...nodeArgs("BENCH_LOAD_NODE_ARGS"), LOAD_SCRIPT, JSON.stringify(config)],
    { cwd: ROOT, stdio: ["ignore", "inherit", "inherit", "ipc"], serialization: "advanced" },
  );
  let resolveReady: () => void = () => {};
  let rejectReady: (error: Error) => void = () => {};
  let resolveResult: (result: LoadResult) => void = () => {};
  let rejectResult: (error: Error) => void = () => {};
  const ready = new Promise<void>((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });
  const result = new Promise<LoadResult>((resolve, reject) => {
    resolveResult = resolve;
    rejectResult = reject;
  });
  // Observed by the run when it gets that far; never an unhandled rejection.
  ready.catch(() => {});
  result.catch(() => {});
  const fail = (error: Error) => {
    rejectReady(error);
    rejectResult(error);
  };
  let running = true;
  const exited = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      running = false;
      fail(
        new Error(`load process ${child.pid} exited (${signal ?? `exit code ${code}`}) before its result`),
      );
      resolve();
    });
  });
  child.once("error", (error) => {
    running = false;
    fail(error);
  });
  child.on("message", (message: LoadMessage) => {
    if (message.type === "ready") resolveReady();
    else if (message.type === "result") resolveResult(message.result);
    else fail(new Error(`load process ${child.pid} failed: ${message.message}`));
  });
  const waitExit = (ms: number) => Promise.race([exited.then(() => true), sleep(ms).then(() => !running)]);
  let killing: Promise<void> | undefined;
  const kill = (): Promise<void> => {
    killing ??= (async () => {
      if (!running) return;
      child.kill("SIGTERM");
      if (!(await waitExit(LOAD_EXIT_TIMEOUT_MS))) {
        child.kill("SIGKILL");
        await exited;
      }
    })();
    return killing;
  };
  return {
    pid: child.pid ?? -1,
    ready,
    result,
    start: () => {
      child.send({ type: "start" }, (error) => {
        if (error !== null) fail(error);
      });
    },
    // It waits after its result so that its CPU time can still be read; a stuck one is ended.
    stop: async () => {
      // A closed channel only means it is already on its way out.
      if (running && child.connected) child.send({ type: "exit" }, () => {});
      if (!(await waitExit(LOAD_EXIT_TIMEOUT_MS))) await kill();
    },
    kill,
  };
}

/** n split into k whole parts differing by at most one, larger first: spread(16, 3) = [6, 5, 5]. */
function spread(n: number, k: number): number[] {
  return Array.from({ length: k }, (_, i) => Math.floor(n / k) + (i < n % k ? 1 : 0));
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
