import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { Agent } from "node:http";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { create, toBinary } from "@bufbuild/protobuf";
import SqliteDatabase from "better-sqlite3";
import { CreateEventRequestSchema } from "../src/gen/grpc/eventsdb_pb.js";
import { grpcFrame } from "../src/transports/grpc/fast-path.js";
import { freePort } from "../test/support/ports.js";
import { type ServerProcess, startServerProcess } from "../test/support/process.js";
import {
  DATA_BYTES,
  type RawResult,
  rawInserts,
  rawMeasurement,
  rawRow,
  rawSingleInserts,
  SUBJECTS,
  sqlTime,
} from "./ingest.js";
import {
  buildDist,
  Cleanup,
  checkArguments,
  checkoutBuild,
  formatRate,
  formatTable,
  machineInfo,
  parseCountOption,
  parseDuration,
  percentile,
  postEvent,
  ROOT,
  serverEnv,
  startBenchDatabase,
  startServerChild,
  textOption,
  writeResults,
} from "./support.js";

/** main at 7a3d16a, before the one-connection work of issue 16: the baseline column. */
export const ONECON_BASELINE = "7a3d16a";
const DEFAULT_SECONDS = 5;
const DEFAULT_ROUNDS = 3;
const WARMUP_SECONDS = 1;
/** A server's one-connection append rate must reach this fraction of the raw INSERT's (issue 16). */
export const ONECON_TARGET_FRACTION = 0.7;
const REQUEST_TIMEOUT_MS = 30_000;

type Mode = "REST simple" | "REST structured" | "gRPC CreateEvent";
const MODES: readonly Mode[] = ["REST simple", "REST structured", "gRPC CreateEvent"];
type Build = "this build" | "baseline";
/** The bare hop (bench/onecon-hop.ts): a node:http server doing the raw INSERT and nothing else. */
const HOP = "bare Node HTTP + INSERT";

/** One measured loop: rate, latencies. */
interface Loop {
  eventsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  calls: number;
  errors: number;
}

/**
 * `npm run bench -- onecon [--duration S] [--rounds N] [--store mysql|sqlite|both] [--baseline REV
 * | --no-baseline]`: one client appending one event at a time over one keep-alive connection (REST
 * simple JSON, REST structured CloudEvent with an id, gRPC CreateEvent unary), beside a raw
 * single-row autocommit INSERT loop over one connection into the same kind of store, and beside the
 * baseline build (ONECON_BASELINE), in the same run. Each round runs raw, this build and the
 * baseline in a rotating order; the table gives medians over the rounds, the spread, and each
 * server's rate as a fraction of the raw INSERT's (target ≥ 70 %).
 */
export async function runOneConnection(args: readonly string[]): Promise<void> {
  checkArguments("onecon", args, ["--duration", "--rounds", "--store", "--baseline"], ["--no-baseline"]);
  const seconds = parseDuration(args, DEFAULT_SECONDS);
  const rounds = parseCountOption(args, "--rounds", DEFAULT_ROUNDS, 1);
  const storeArg = textOption(args, "--store") ?? "both";
  if (!["mysql", "sqlite", "both"].includes(storeArg)) throw new Error("--store is mysql, sqlite or both");
  const baselineRevision = args.includes("--no-baseline")
    ? undefined
    : (textOption(args, "--baseline") ?? ONECON_BASELINE);
  const cleanup = new Cleanup();
  const removeSignalHandlers = cleanup.onSignals();
  try {
    const work = await mkdtemp(path.join(os.tmpdir(), "eventsdb-bench-onecon-"));
    cleanup.add("remove the bench dir", () => rm(work, { recursive: true, force: true }));
    const baselineCli =
      baselineRevision === undefined
        ? undefined
        : await checkoutBuild(baselineRevision, path.join(work, "baseline"), cleanup);
    const reports: StoreReport[] = [];
    if (storeArg !== "sqlite") reports.push(await mysqlStore(cleanup, seconds, rounds, baselineCli));
    if (storeArg !== "mysql") reports.push(await sqliteStore(cleanup, work, seconds, rounds, baselineCli));
    const lines: string[] = [];
    for (const report of reports) {
      lines.push(
        "",
        `onecon: ${report.label}; ${seconds} s per loop, ${rounds} rounds (order rotated), ${DATA_BYTES}-byte data, ` +
          `one connection, one event per call; baseline = ${baselineRevision ?? "none"}`,
        "",
        report.table,
      );
    }
    const machine = machineInfo();
    lines.push(
      "",
      `target: each server row >= ${ONECON_TARGET_FRACTION * 100} % of the raw INSERT (median of the rounds); ` +
        `${machine.cpus} × ${machine.cpuModel}, Node ${machine.node}`,
    );
    process.stdout.write(`${lines.join("\n")}\n`);
    const file = await writeResults("onecon", {
      suite: "onecon",
      finishedAt: new Date().toISOString(),
      secondsPerLoop: seconds,
      rounds,
      baselineRevision,
      machine,
      stores: reports.map(({ label, results }) => ({ label, results })),
    });
    process.stdout.write(`results: ${path.relative(ROOT, file)}\n`);
  } finally {
    removeSignalHandlers();
    await cleanup.run();
  }
}

interface StoreReport {
  label: string;
  table: string;
  results: Record<string, Loop[]>;
}

/** What one store's rounds need: a raw loop, and a fresh database for each server. */
interface StoreSetup {
  label: string;
  raw(seconds: number): Promise<Loop>;
  databaseUrl(name: string): Promise<string>;
}

async function mysqlStore(
  cleanup: Cleanup,
  seconds: number,
  rounds: number,
  baselineCli: string | undefined,
): Promise<StoreReport> {
  const { mariadb, admin, mariadbVersion } = await startBenchDatabase(cleanup);
  // Creates the raw database (the Go service's table) and warms it; later loops continue its ids.
  const first = await rawInserts(admin);
  let nextId = 1_000_000_000;
  return runStore(
    {
      label: `MariaDB ${mariadbVersion} (raw: single-row autocommit INSERT, one mysql2 connection)`,
      raw: async (s) => {
        await admin.query("USE raw");
        try {
          const result = await rawSingleInserts(admin, nextId, s);
          nextId += result.rows;
          return fromRaw(result);
        } finally {
          await admin.query("USE eventsdb");
        }
      },
      databaseUrl: async (name) => {
        await admin.query(`CREATE DATABASE \`${name}\``);
        return mariadb.url.replace(/\/[^/]*$/, `/${name}`);
      },
    },
    cleanup,
    seconds,
    rounds,
    baselineCli,
    { "raw single-row INSERT, first (rawInserts)": [fromRaw(first.single)] },
  );
}

async function sqliteStore(
  cleanup: Cleanup,
  work: string,
  seconds: number,
  rounds: number,
  baselineCli: string | undefined,
): Promise<StoreReport> {
  process.stderr.write("bench: building dist/ (tsc -p tsconfig.build.json)\n");
  await buildDist();
  // The raw loop: the store's durability settings (WAL, synchronous=FULL), one INSERT per
  // (autocommit) transaction, the Go service's columns.
  const raw = new SqliteDatabase(path.join(work, "raw.db"));
  cleanup.add("close the raw SQLite file", async () => raw.close());
  raw.pragma("journal_mode = WAL");
  raw.pragma("synchronous = FULL");
  raw.exec(await readFile(path.join(ROOT, "sql", "sqlite", "001_events.sql"), "utf8"));
  const insert = raw.prepare(
    "INSERT INTO events (id, source, type, subject, time, data) VALUES (?, ?, ?, ?, ?, ?)",
  );
  let nextId = 1;
  return runStore(
    {
      label: "SQLite (WAL, synchronous=FULL; raw: one INSERT per transaction, better-sqlite3)",
      raw: async (s) => {
        const time = sqlTime(new Date());
        const latencies: number[] = [];
        const start = performance.now();
        const end = start + s * 1000;
        let now = start;
        while (now < end) {
          insert.run(...rawRow(nextId++, time));
          const after = performance.now();
          latencies.push(after - now);
          now = after;
        }
        return loopOf(latencies, (now - start) / 1000, 0);
      },
      databaseUrl: async (name) => `sqlite:${path.join(work, `${name}.db`)}`,
    },
    cleanup,
    seconds,
    rounds,
    baselineCli,
    {},
  );
}

async function runStore(
  setup: StoreSetup,
  cleanup: Cleanup,
  seconds: number,
  rounds: number,
  baselineCli: string | undefined,
  extra: Record<string, Loop[]>,
): Promise<StoreReport> {
  const servers = new Map<Build, ServerProcess>();
  for (const build of ["this build", "baseline"] as const) {
    if (build === "baseline" && baselineCli === undefined) continue;
    const url = await setup.databaseUrl(build === "baseline" ? "onecon_baseline" : "onecon_this");
    process.stderr.write(`bench: starting ${build} on ${url}\n`);
    const server = await startServerChild(serverEnv(url), [], build === "baseline" ? baselineCli : undefined);
    cleanup.add(`stop ${build}`, () => server.stop());
    servers.set(build, server);
    for (const mode of MODES) await clientLoop(server, mode, WARMUP_SECONDS);
  }
  const results: Record<string, Loop[]> = {};
  const add = (name: string, loop: Loop) => {
    results[name] = [...(results[name] ?? []), loop];
  };
  const hop = await startServerProcess({
    env: { DATABASE_URL: await setup.databaseUrl("onecon_hop") },
    cli: path.join(ROOT, "bench", "onecon-hop.ts"),
    command: [],
    nodeArgs: ["--import", "tsx"],
    cwd: ROOT,
    ports: { rest: await freePort(), grpc: await freePort() },
  });
  cleanup.add("stop the bare hop", () => hop.stop());
  await clientLoop(hop, "REST simple", WARMUP_SECONDS);
  const steps: (Build | "raw" | "hop")[] = ["raw", "hop", ...servers.keys()];
  for (let round = 0; round < rounds; round++) {
    const order = steps.map((_, i) => steps[(i + round) % steps.length] as Build | "raw" | "hop");
    for (const step of order) {
      if (step === "hop") {
        process.stderr.write(`bench: round ${round + 1}/${rounds}: ${HOP}\n`);
        add(HOP, await clientLoop(hop, "REST simple", seconds));
        continue;
      }
      if (step === "raw") {
        process.stderr.write(
          `bench: ${setup.label.split(" (")[0]}: round ${round + 1}/${rounds}: raw INSERT\n`,
        );
        add("raw INSERT", await setup.raw(seconds));
        continue;
      }
      const server = servers.get(step) as ServerProcess;
      for (const mode of MODES) {
        process.stderr.write(`bench: round ${round + 1}/${rounds}: ${step}: ${mode}\n`);
        add(`${mode}, ${step}`, await clientLoop(server, mode, seconds));
        const exit = server.exitStatus();
        if (exit !== undefined) throw new Error(`${step} died during the run (${exit})`);
      }
    }
  }
  const rawMedian = median((results["raw INSERT"] ?? []).map((l) => l.eventsPerSecond));
  const hopMedian = median((results[HOP] ?? []).map((l) => l.eventsPerSecond));
  const rows: string[][] = [];
  for (const [name, loops] of Object.entries(results)) {
    const rates = loops.map((l) => l.eventsPerSecond);
    const rate = median(rates);
    const isServer = name !== "raw INSERT";
    const isBuild = isServer && name !== HOP;
    const baselineName = name.replace(", this build", ", baseline");
    const baselineRate =
      name.endsWith(", this build") && results[baselineName] !== undefined
        ? median((results[baselineName] as Loop[]).map((l) => l.eventsPerSecond))
        : undefined;
    rows.push([
      name,
      formatRate(rate),
      `${formatRate(Math.min(...rates))}–${formatRate(Math.max(...rates))}`,
      median(loops.map((l) => l.p50Ms)).toFixed(2),
      median(loops.map((l) => l.p99Ms)).toFixed(2),
      String(loops.reduce((n, l) => n + l.errors, 0)),
      isServer && rawMedian > 0 ? `${Math.round((rate / rawMedian) * 100)} %` : "-",
      isBuild && hopMedian > 0 ? `${Math.round((rate / hopMedian) * 100)} %` : "-",
      baselineRate === undefined || baselineRate === 0 ? "-" : `${(rate / baselineRate).toFixed(2)}×`,
      !isBuild || name.endsWith(", baseline")
        ? "-"
        : rate >= rawMedian * ONECON_TARGET_FRACTION
          ? "ok"
          : "below",
    ]);
  }
  const table = formatTable(
    [
      "run",
      "ev/s (median)",
      "range",
      "p50 ms",
      "p99 ms",
      "errors",
      "of raw",
      "of hop",
      "vs baseline",
      "≥ 70 %",
    ],
    rows,
  );
  return { label: setup.label, table, results: { ...extra, ...results } };
}

function fromRaw(raw: RawResult): Loop {
  const m = rawMeasurement(raw);
  return {
    eventsPerSecond: m.eventsPerSecond,
    p50Ms: m.p50Ms,
    p99Ms: m.p99Ms,
    calls: raw.statements,
    errors: 0,
  };
}

function loopOf(latencies: readonly number[], seconds: number, errors: number): Loop {
  return {
    eventsPerSecond: seconds > 0 ? latencies.length / seconds : 0,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    calls: latencies.length,
    errors,
  };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? 0 : (sorted[Math.floor((sorted.length - 1) / 2)] as number);
}

let uniqueIds = 0;

/** One call's body: the simple JSON, a structured CloudEvent with a fresh id, or a gRPC frame. */
function body(mode: Mode, k: number): string | Buffer {
  const subject = `bench/${k % SUBJECTS}`;
  const data = randomBytes(DATA_BYTES);
  if (mode === "REST simple") {
    return JSON.stringify({ source: "bench", type: "bench.created", subject, data: data.toString("base64") });
  }
  if (mode === "REST structured") {
    return JSON.stringify({
      specversion: "1.0",
      id: `onecon-${process.pid}-${++uniqueIds}`,
      source: "bench",
      type: "bench.created",
      subject,
      datacontenttype: "application/octet-stream",
      data_base64: data.toString("base64"),
    });
  }
  return grpcFrame(
    toBinary(
      CreateEventRequestSchema,
      create(CreateEventRequestSchema, { source: "bench", type: "bench.created", subject, data }),
    ),
  );
}

/** Calls one after the other over one connection for `seconds`; a failed call counts as an error. */
async function clientLoop(server: ServerProcess, mode: Mode, seconds: number): Promise<Loop> {
  const call = mode === "gRPC CreateEvent" ? grpcCaller(server.grpcPort) : restCaller(server.url, mode);
  try {
    const latencies: number[] = [];
    let errors = 0;
    const start = performance.now();
    const end = start + seconds * 1000;
    let now = start;
    let k = 0;
    while (now < end) {
      const payload = body(mode, k++);
      const ok = await call.send(payload);
      const after = performance.now();
      if (ok) latencies.push(after - now);
      else errors++;
      now = after;
    }
    return loopOf(latencies, (now - start) / 1000, errors);
  } finally {
    call.close();
  }
}

interface Caller {
  send(payload: string | Buffer): Promise<boolean>;
  close(): void;
}

/** POST /events over one keep-alive socket (maxSockets 1). */
function restCaller(base: string, mode: Mode): Caller {
  const url = new URL(base);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const contentType = mode === "REST structured" ? "application/cloudevents+json" : "application/json";
  return {
    send: (payload) =>
      postEvent(url, agent, payload, contentType).then(
        ({ status }) => status === 200 || status === 201,
        () => false,
      ),
    close: () => agent.destroy(),
  };
}

/** gRPC CreateEvent by hand over one HTTP/2 session: one frame out, the status in the trailers. */
function grpcCaller(port: number): Caller {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on("error", () => {});
  const headers = {
    ":method": "POST",
    ":path": "/grpc.EventsDB/CreateEvent",
    "content-type": "application/grpc",
    te: "trailers",
  };
  return {
    send: (payload) =>
      new Promise((resolve) => {
        const stream = session.request(headers);
        let status: unknown;
        const take = (h: http2.IncomingHttpHeaders) => {
          if (h["grpc-status"] !== undefined) status = h["grpc-status"];
        };
        const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), REQUEST_TIMEOUT_MS);
        stream.on("response", take);
        stream.on("trailers", take);
        stream.on("data", () => {});
        stream.once("error", () => {
          clearTimeout(timer);
          resolve(false);
        });
        stream.once("close", () => {
          clearTimeout(timer);
          resolve(String(status) === "0");
        });
        stream.end(payload);
      }),
    close: () => session.destroy(),
  };
}
