import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { grpcMessage, rawGrpcCall } from "../test/support/grpc.js";
import { type ServerProcess, startServerProcess } from "../test/support/process.js";
import {
  buildDist,
  builtCli,
  Cleanup,
  checkArguments,
  checkoutBuild,
  formatTable,
  machineInfo,
  parseCountOption,
  ROOT,
  RssSampler,
  rssKb,
  serverEnv,
  sleep,
  startServerChild,
  textOption,
  writeResults,
} from "./support.js";

const OPTION_FLAGS = [
  "--scenario",
  "--streams",
  "--connections",
  "--pipelined",
  "--sessions",
  "--idle-streams",
  "--rounds",
  "--settle",
  "--baseline",
] as const;
const SCENARIOS = ["idle", "stalled", "historic", "unread"] as const;
/** The build the idle scenario compares with: main before issue 16's memory work. */
const IDLE_BASELINE = "7a3d16a";
type Scenario = (typeof SCENARIOS)[number];
const MiB = 1024 * 1024;
/** How long memory is watched once the load is in place. */
const HOLD_MS = 10_000;

interface Options {
  scenarios: Scenario[];
  streams: number;
  connections: number;
  pipelined: number;
  sessions: number;
  idleStreams: number;
  rounds: number;
  settleSeconds: number;
  baseline: string;
}

function parseOptions(args: readonly string[]): Options {
  checkArguments("memory", args, OPTION_FLAGS, []);
  const scenario = textOption(args, "--scenario") ?? "all";
  if (scenario !== "all" && !SCENARIOS.includes(scenario as Scenario)) {
    throw new Error(`memory: --scenario must be all or one of ${SCENARIOS.join(", ")}`);
  }
  return {
    scenarios: scenario === "all" ? [...SCENARIOS] : [scenario as Scenario],
    streams: parseCountOption(args, "--streams", 200, 1),
    connections: parseCountOption(args, "--connections", 10, 0),
    pipelined: parseCountOption(args, "--pipelined", 20, 1),
    sessions: parseCountOption(args, "--sessions", 2, 0),
    idleStreams: parseCountOption(args, "--idle-streams", 1000, 1),
    rounds: parseCountOption(args, "--rounds", 3, 1),
    settleSeconds: parseCountOption(args, "--settle", 30, 1),
    baseline: textOption(args, "--baseline") ?? IDLE_BASELINE,
  };
}

/**
 * `npm run bench -- memory [--scenario stalled|historic|unread] …`: the server's memory under
 * clients that take much and read little (issue 10, items 6, 15 and 16), on a fresh SQLite store
 * per scenario (the budget logic is the same on MySQL). Figures are the server's VmRSS.
 *
 * - stalled: 100 events of 700 KB, then `--streams` (200) SSE clients that never read.
 * - historic: 420 events of 1 MiB, then one Connect JSON GetHistoricEventsFromSubject and one REST
 *   GET /events with limit 1000: the answer's size, and whether the server survived.
 * - unread: 1000 events of 10 KB, then `--connections` (10) HTTP/1.1 connections pipelining
 *   `--pipelined` (20) GET /events?limit=1000 each and `--sessions` (2) HTTP/2 sessions with a
 *   zero window opening as many, none of them reading; /healthz is timed meanwhile.
 * - idle (issue 16): the default start (`serve`, SQLite, no auth) of this build beside
 *   `--baseline` (7a3d16a), `--rounds` (3) times interleaved: RSS once started, after `--settle`
 *   (30) seconds, V8 heap after a full GC, and with `--idle-streams` (1000) SSE streams open; then
 *   the RSS and heap each module adds to a bare node process (see idle()).
 */
export async function runMemory(args: readonly string[]): Promise<void> {
  const options = parseOptions(args);
  const cleanup = new Cleanup();
  const removeSignalHandlers = cleanup.onSignals();
  try {
    process.stderr.write("bench: building dist/ (tsc -p tsconfig.build.json)\n");
    await buildDist();
    const rows: string[][] = [];
    const results: Record<string, unknown> = {};
    for (const scenario of options.scenarios) {
      if (scenario === "idle") {
        const result = await idle(options, cleanup);
        results[scenario] = result;
        rows.push(...result.rows);
        continue;
      }
      const dir = await mkdtemp(path.join(os.tmpdir(), "eventsdb-memory-"));
      cleanup.add(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }));
      const env = serverEnv(`sqlite:${path.join(dir, "events.db")}`);
      const server = await startServerChild(env, ["--max-total-clients", "100000"]);
      cleanup.add(`stop the ${scenario} server`, () => server.stop());
      const result =
        scenario === "stalled"
          ? await stalled(server, options, cleanup)
          : scenario === "historic"
            ? await historic(server)
            : await unread(server, options, cleanup);
      results[scenario] = result;
      rows.push(...result.rows);
      await server.stop();
    }
    const lines = [
      "",
      `memory: server VmRSS under clients that read little; SQLite; ${machineInfo().cpus} × ${machineInfo().cpuModel}, Node ${process.version}`,
      "",
      rows.length > 0 ? formatTable(["measure", "measured"], rows) : "(idle: see its tables above)",
      "",
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
    const file = await writeResults("memory", {
      suite: "memory",
      finishedAt: new Date().toISOString(),
      options,
      results,
    });
    process.stderr.write(`bench: results written to ${file}\n`);
  } finally {
    await cleanup.run();
    removeSignalHandlers();
  }
}

interface ScenarioResult {
  rows: string[][];
  [measure: string]: unknown;
}

const mib = (kb: number) => `${(kb / 1024).toFixed(1)} MiB`;

/** Appends `count` events of `bytes` random bytes on `subject`, `perRequest` per POST. */
async function publish(server: ServerProcess, subject: string, count: number, bytes: number): Promise<void> {
  const perRequest = Math.max(1, Math.floor((8 * MiB) / bytes));
  for (let done = 0; done < count; done += perRequest) {
    const n = Math.min(perRequest, count - done);
    const events = Array.from({ length: n }, () => ({
      source: "bench",
      type: "memory",
      subject,
      data: randomBytes(bytes).toString("base64"),
    }));
    const res = await fetch(`${server.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(events),
    });
    if (res.status !== 200) throw new Error(`POST /events answered ${res.status}: ${await res.text()}`);
  }
}

/** Watches the server's RSS for HOLD_MS; its peak and its last value. */
async function hold(
  server: ServerProcess,
  during?: () => Promise<void>,
): Promise<{ peakKb: number; lastKb: number }> {
  const sampler = new RssSampler(server.pid);
  sampler.start();
  const deadline = performance.now() + HOLD_MS;
  while (performance.now() < deadline) {
    await (during?.() ?? sleep(200));
    await sleep(200);
  }
  const { peakKb } = await sampler.stop();
  return { peakKb, lastKb: await rssKb(server.pid) };
}

/** A raw HTTP/1.1 connection that sends `requests` and never reads. */
function silentConnection(server: ServerProcess, requests: string, cleanup: Cleanup): net.Socket {
  const socket = net.connect(server.restPort, "127.0.0.1");
  socket.pause();
  socket.on("error", () => {});
  socket.write(requests);
  cleanup.add("close a silent connection", async () => {
    socket.destroy();
  });
  return socket;
}

async function stalled(server: ServerProcess, options: Options, cleanup: Cleanup): Promise<ScenarioResult> {
  process.stderr.write("bench: stalled: 100 events of 700 KB\n");
  await publish(server, "stall", 100, 700 * 1024);
  await sleep(1000);
  const baseKb = await rssKb(server.pid);
  process.stderr.write(`bench: stalled: ${options.streams} SSE clients that never read\n`);
  const sockets = Array.from({ length: options.streams }, () =>
    silentConnection(server, "GET /events/stream?subject=stall HTTP/1.1\r\nHost: bench\r\n\r\n", cleanup),
  );
  const { peakKb, lastKb } = await hold(server);
  for (const socket of sockets) socket.destroy();
  const perStreamKb = (lastKb - baseKb) / options.streams;
  return {
    rows: [
      [`stalled: RSS after publishing 100 × 700 KB`, mib(baseKb)],
      [
        `stalled: RSS with ${options.streams} SSE clients that never read (peak / after ${HOLD_MS / 1000} s)`,
        `${mib(peakKb)} / ${mib(lastKb)}`,
      ],
      [`stalled: RSS per stalled stream`, `${(perStreamKb / 1024).toFixed(2)} MiB`],
    ],
    baseKb,
    peakKb,
    lastKb,
    streams: options.streams,
  };
}

async function historic(server: ServerProcess): Promise<ScenarioResult> {
  process.stderr.write("bench: historic: 420 events of 1 MiB\n");
  await publish(server, "big", 420, MiB);
  await sleep(1000);
  const baseKb = await rssKb(server.pid);
  const sampler = new RssSampler(server.pid);
  sampler.start();
  const ask = async (what: string, call: () => Promise<Response>) => {
    try {
      const res = await call();
      const body = await res.text();
      let events = 0;
      let more: unknown;
      try {
        const parsed = JSON.parse(body) as { events?: unknown[]; hasMore?: boolean; has_more?: boolean };
        events = parsed.events?.length ?? 0;
        more = parsed.hasMore ?? parsed.has_more;
      } catch {
        // not JSON: reported by its size
      }
      return `${what}: ${res.status}, ${events} events, has_more ${String(more)}, ${(body.length / MiB).toFixed(1)} MiB`;
    } catch (error) {
      return `${what}: failed (${(error as Error).message}); server ${server.exitStatus() ?? "alive"}`;
    }
  };
  const connect = await ask("Connect JSON GetHistoric limit 1000", () =>
    fetch(`${server.url}/grpc.EventsDB/GetHistoricEventsFromSubject`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ subject: "big", limit: 1000 }),
      signal: AbortSignal.timeout(120_000),
    }),
  );
  const rest =
    server.exitStatus() === undefined
      ? await ask("REST GET /events limit 1000", () =>
          fetch(`${server.url}/events?subject=big&limit=1000`, { signal: AbortSignal.timeout(120_000) }),
        )
      : "REST GET /events: not asked, the server is gone";
  const { peakKb } = await sampler.stop();
  return {
    rows: [
      ["historic: RSS after publishing 420 × 1 MiB", mib(baseKb)],
      ["historic: one answer each", `${connect}; ${rest}`],
      ["historic: server RSS peak during both", mib(peakKb)],
      ["historic: server after both", server.exitStatus() ?? "alive"],
    ],
    baseKb,
    peakKb,
    connect,
    rest,
  };
}

async function unread(server: ServerProcess, options: Options, cleanup: Cleanup): Promise<ScenarioResult> {
  process.stderr.write("bench: unread: 1000 events of 10 KB\n");
  await publish(server, "pages", 1000, 10 * 1024);
  await sleep(1000);
  const baseKb = await rssKb(server.pid);
  const request = "GET /events?subject=pages&limit=1000 HTTP/1.1\r\nHost: bench\r\n\r\n";
  const sockets = Array.from({ length: options.connections }, () =>
    silentConnection(server, request.repeat(options.pipelined), cleanup),
  );
  const sessions = Array.from({ length: options.sessions }, () => {
    const session = http2.connect(server.url, { settings: { initialWindowSize: 0 } });
    session.on("error", () => {});
    cleanup.add("close a zero-window session", async () => {
      session.destroy();
    });
    for (let i = 0; i < options.pipelined; i++) {
      const stream = session.request({ ":path": "/events?subject=pages&limit=1000" });
      stream.on("error", () => {});
      stream.end();
    }
    return session;
  });
  const healthz: number[] = [];
  let failed = 0;
  const { peakKb, lastKb } = await hold(server, async () => {
    const started = performance.now();
    try {
      const res = await fetch(`${server.url}/healthz`, { signal: AbortSignal.timeout(5000) });
      await res.arrayBuffer();
      healthz.push(performance.now() - started);
    } catch {
      failed++;
    }
  });
  for (const socket of sockets) socket.destroy();
  for (const session of sessions) session.destroy();
  const slowest = Math.max(0, ...healthz);
  const load = `${options.connections} HTTP/1.1 connections × ${options.pipelined} pipelined + ${options.sessions} zero-window HTTP/2 sessions × ${options.pipelined}`;
  return {
    rows: [
      ["unread: RSS after publishing 1000 × 10 KB", mib(baseKb)],
      [
        `unread: RSS under ${load} GET /events?limit=1000 (peak / after ${HOLD_MS / 1000} s)`,
        `${mib(peakKb)} / ${mib(lastKb)}`,
      ],
      [
        "unread: /healthz meanwhile (answered, slowest, timed out)",
        `${healthz.length}, ${slowest.toFixed(0)} ms, ${failed}`,
      ],
    ],
    baseKb,
    peakKb,
    lastKb,
    healthz,
    failed,
  };
}

// ---- idle (issue 16) ------------------------------------------------------------------------------

/** The modules whose cost the idle table lists: each alone in a bare node process. */
const PACKAGES = [
  "mysql2",
  "better-sqlite3",
  "kysely",
  "fastify",
  "@fastify/cors",
  "pino",
  "pino-pretty",
  "prom-client",
  "yaml",
  "commander",
  "semver",
  "@opentelemetry/api",
  "@fastify/ajv-compiler",
  "@bufbuild/protobuf",
  "@connectrpc/connect",
  "@connectrpc/connect-node",
  "@connectrpc/connect-fastify",
] as const;
/** Files of a build, measured for this build and the baseline. */
const BUILD_FILES = [
  "gen/grpc/eventsdb_pb.js",
  "transports/grpc/service.js",
  "transports/grpc/reflection.js",
  "ui/console.js",
  "storage/open.js",
  "metrics.js",
  "app.js",
  "server.js",
] as const;
/** How long the idle streams are held before RSS is read. */
const STREAMS_HOLD_MS = 10_000;

interface IdleReading {
  /** VmRSS 2 s after the start line. */
  startKb: number;
  /** VmRSS after --settle seconds. */
  settledKb: number;
  /** After a full GC (memory-probe.mjs): RSS and V8 heap used, bytes. */
  gcRss: number;
  gcHeapUsed: number;
  /**
   * VmRSS 1 s after the first requests of each transport, in this order: REST (a POST, a GET, a
   * 404), one Connect JSON call, one gRPC call through Connect (GetEventByID) and one gRPC append
   * (the fast path); then the V8 heap after a full GC with all of them loaded.
   */
  firstRestKb: number;
  firstConnectKb: number;
  firstGrpcKb: number;
  firstGrpcAppendKb: number;
  /** VmRSS --settle seconds after those calls (the young generation their imports grew given back, or not). */
  calledSettledKb: number;
  calledHeapUsed: number;
  /** VmRSS just before the idle streams open, and with them open for STREAMS_HOLD_MS; how many were answered 200. */
  beforeStreamsKb: number;
  streamsKb: number;
  streamsOpen: number;
}

const PROBE = path.join(ROOT, "bench", "memory-probe.mjs");
const MODULE_COST = path.join(ROOT, "bench", "module-cost.mjs");

/** One default start of `cli`: its readings (see IdleReading). */
async function idleRun(cli: string, options: Options, cleanup: Cleanup): Promise<IdleReading> {
  const cwd = await mkdtemp(path.join(os.tmpdir(), "eventsdb-idle-"));
  cleanup.add(`remove ${cwd}`, () => rm(cwd, { recursive: true, force: true }));
  // The default start: no DATABASE_URL (SQLite under cwd), no token, LOG_LEVEL=info, JSON lines.
  const server = await startServerProcess({ cli, cwd, nodeArgs: ["--expose-gc", "--import", PROBE] });
  cleanup.add("stop the idle server", () => server.stop());
  try {
    await sleep(2000);
    const startKb = await rssKb(server.pid);
    await sleep(options.settleSeconds * 1000 - 2000);
    const settledKb = await rssKb(server.pid);
    const probe = await probeMemory(server);
    const first = await firstCalls(server);
    await sleep(options.settleSeconds * 1000);
    const calledSettledKb = await rssKb(server.pid);
    const called = await probeMemory(server);
    await sleep(1000);
    const beforeStreamsKb = await rssKb(server.pid);
    const streams = await idleStreams(server, options.idleStreams, cleanup);
    return {
      startKb,
      settledKb,
      gcRss: probe.rss,
      gcHeapUsed: probe.heapUsed,
      ...first,
      calledSettledKb,
      calledHeapUsed: called.heapUsed,
      beforeStreamsKb,
      ...streams,
    };
  } finally {
    await server.stop();
  }
}

/** The first calls of each transport (see IdleReading), each followed by the RSS 1 s later. */
async function firstCalls(server: ServerProcess): Promise<{
  firstRestKb: number;
  firstConnectKb: number;
  firstGrpcKb: number;
  firstGrpcAppendKb: number;
}> {
  const rssAfter = async (call: () => Promise<void>) => {
    await call();
    await sleep(1000);
    return rssKb(server.pid);
  };
  const expect = (what: string, got: unknown, wanted: unknown) => {
    if (got !== wanted) throw new Error(`idle: ${what} answered ${String(got)}, not ${String(wanted)}`);
  };
  const firstRestKb = await rssAfter(async () => {
    const posted = await fetch(`${server.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ source: "bench", type: "idle", subject: "idle", data: "aGk=" }),
    });
    expect("POST /events", posted.status, 200);
    await posted.arrayBuffer();
    const read = await fetch(`${server.url}/events?subject=idle`);
    expect("GET /events", read.status, 200);
    await read.arrayBuffer();
    const missing = await fetch(`${server.url}/events/999999`);
    expect("GET /events/999999", missing.status, 404);
    await missing.arrayBuffer();
  });
  const firstConnectKb = await rssAfter(async () => {
    const res = await fetch(`${server.url}/grpc.EventsDB/GetEventByID`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: "1" }),
    });
    expect("Connect GetEventByID", res.status, 200);
    await res.arrayBuffer();
  });
  // GetEventByID{id: 1} and CreateEvent{source: "b", type: "t"} as protobuf.
  const firstGrpcKb = await rssAfter(async () => {
    const answer = await rawGrpcCall(
      server.url,
      "/grpc.EventsDB/GetEventByID",
      grpcMessage(Buffer.from([8, 1])),
    );
    expect("gRPC GetEventByID", answer.grpcStatus, "0");
  });
  const firstGrpcAppendKb = await rssAfter(async () => {
    const message = Buffer.from([0x0a, 0x01, 0x62, 0x12, 0x01, 0x74]);
    const answer = await rawGrpcCall(server.url, "/grpc.EventsDB/CreateEvent", grpcMessage(message));
    expect("gRPC CreateEvent", answer.grpcStatus, "0");
  });
  return { firstRestKb, firstConnectKb, firstGrpcKb, firstGrpcAppendKb };
}

/** Asks memory-probe.mjs in the server for its memory after a full GC. */
async function probeMemory(server: ServerProcess): Promise<{ rss: number; heapUsed: number }> {
  const seen = server.logLines().length;
  server.signal("SIGUSR2");
  const deadline = performance.now() + 10_000;
  while (performance.now() < deadline) {
    const line = server
      .logLines()
      .slice(seen)
      .find((text) => text.startsWith("memory-probe "));
    if (line !== undefined) {
      return (
        JSON.parse(line.slice("memory-probe ".length)) as { afterGc: { rss: number; heapUsed: number } }
      ).afterGc;
    }
    await sleep(50);
  }
  throw new Error("the server's memory probe did not answer");
}

/** Opens `count` SSE streams that read what comes (heartbeats) and holds them; RSS meanwhile. */
async function idleStreams(
  server: ServerProcess,
  count: number,
  cleanup: Cleanup,
): Promise<{ streamsKb: number; streamsOpen: number }> {
  let open = 0;
  const sockets: net.Socket[] = [];
  for (let i = 0; i < count; i++) {
    const socket = net.connect(server.restPort, "127.0.0.1");
    socket.on("error", () => {});
    socket.once("data", (chunk: Buffer) => {
      if (chunk.toString("latin1").startsWith("HTTP/1.1 200")) open++;
    });
    socket.resume();
    socket.write("GET /events/stream?subject=idle HTTP/1.1\r\nHost: bench\r\n\r\n");
    sockets.push(socket);
    // A few at a time, as clients arrive, not one burst of SYNs the backlog drops.
    if (i % 100 === 99) await sleep(50);
  }
  cleanup.add("close the idle streams", async () => {
    for (const socket of sockets) socket.destroy();
  });
  await sleep(STREAMS_HOLD_MS);
  const streamsKb = await rssKb(server.pid);
  for (const socket of sockets) socket.destroy();
  return { streamsKb, streamsOpen: open };
}

/** RSS and heap bytes that importing `specifier` adds to a bare node process (median of `times`). */
async function moduleCost(specifier: string, times: number): Promise<{ rss: number; heap: number }> {
  const runs: { rss: number; heap: number }[] = [];
  for (let i = 0; i < times; i++) {
    const { stdout } = await promisify(execFile)(process.execPath, ["--expose-gc", MODULE_COST, specifier], {
      cwd: ROOT,
      timeout: 30_000,
    });
    runs.push(JSON.parse(stdout.trim().split("\n").pop() ?? "{}") as { rss: number; heap: number });
  }
  const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;
  return { rss: median(runs.map((run) => run.rss)), heap: median(runs.map((run) => run.heap)) };
}

const spread = (values: readonly number[], unit: (value: number) => string) => {
  const sorted = [...values].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)] ?? 0;
  return sorted.length > 1
    ? `${unit(median)} (${unit(sorted[0] ?? 0)}–${unit(sorted[sorted.length - 1] ?? 0)})`
    : unit(median);
};

async function idle(options: Options, cleanup: Cleanup): Promise<ScenarioResult> {
  const baseDir = await mkdtemp(path.join(os.tmpdir(), "eventsdb-idle-baseline-"));
  await rm(baseDir, { recursive: true, force: true });
  const baselineCli = await checkoutBuild(options.baseline, baseDir, cleanup);
  const builds = [
    // Each build's command line as users run it (the bundle where the build has one, builtCli);
    // `dist` is where its modules are, imported one by one for the per-module table.
    { name: "this build", cli: builtCli(ROOT), dist: path.join(ROOT, "dist") },
    { name: `baseline ${options.baseline}`, cli: baselineCli, dist: path.join(baseDir, "dist") },
  ];
  const readings: IdleReading[][] = builds.map(() => []);
  for (let round = 0; round < options.rounds; round++) {
    // Interleaved, the order flipped each round: a busy moment of the shared machine hits both.
    const order = round % 2 === 0 ? [0, 1] : [1, 0];
    for (const index of order) {
      const build = builds[index] as (typeof builds)[number];
      process.stderr.write(`bench: idle: round ${round + 1}/${options.rounds}, ${build.name}\n`);
      (readings[index] as IdleReading[]).push(await idleRun(build.cli, options, cleanup));
    }
  }
  const mibOf = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;
  const kbRow = (label: string, pick: (reading: IdleReading) => number, unit = mib) => [
    label,
    ...readings.map((runs) => spread(runs.map(pick), unit)),
  ];
  const streams = options.idleStreams;
  const rows: string[][] = [
    kbRow("RSS 2 s after the start line", (r) => r.startKb),
    kbRow(`RSS after ${options.settleSeconds} s idle`, (r) => r.settledKb),
    kbRow("RSS after a full GC", (r) => r.gcRss, mibOf),
    kbRow("V8 heap used after a full GC", (r) => r.gcHeapUsed, mibOf),
    kbRow("RSS 1 s after the first REST requests (POST, GET, a 404)", (r) => r.firstRestKb),
    kbRow("RSS 1 s after the first Connect call (JSON GetEventByID)", (r) => r.firstConnectKb),
    kbRow("RSS 1 s after the first gRPC call (GetEventByID)", (r) => r.firstGrpcKb),
    kbRow("RSS 1 s after the first gRPC append (CreateEvent, fast path)", (r) => r.firstGrpcAppendKb),
    kbRow(`RSS ${options.settleSeconds} s after those calls`, (r) => r.calledSettledKb),
    kbRow("V8 heap used after a full GC, all transports called", (r) => r.calledHeapUsed, mibOf),
    kbRow(`RSS with ${streams} idle SSE streams (after ${STREAMS_HOLD_MS / 1000} s)`, (r) => r.streamsKb),
    kbRow(
      `RSS added per idle SSE stream`,
      (r) => (r.streamsKb - r.beforeStreamsKb) / streams,
      (kb) => `${kb.toFixed(1)} KiB`,
    ),
    kbRow(`SSE streams answered 200`, (r) => r.streamsOpen, String),
  ];
  process.stderr.write("bench: idle: the cost of each module alone\n");
  const moduleRows: string[][] = [];
  const modules: Record<string, unknown> = {};
  const cell = (cost: { rss: number; heap: number }) => `${mibOf(cost.rss)} / ${mibOf(cost.heap)}`;
  for (const name of PACKAGES) {
    const cost = await moduleCost(name, options.rounds);
    modules[name] = cost;
    moduleRows.push([name, cell(cost), "(same)"]);
  }
  for (const file of BUILD_FILES) {
    const costs = [];
    for (const build of builds) {
      const built = path.join(build.dist, file);
      costs.push(existsSync(built) ? await moduleCost(pathToFileURL(built).href, options.rounds) : undefined);
    }
    modules[`dist/${file}`] = costs;
    moduleRows.push([
      `dist/${file}`,
      ...costs.map((cost) => (cost === undefined ? "(no such file)" : cell(cost))),
    ]);
  }
  const header = ["default start (SQLite, no auth), median (range)", ...builds.map((build) => build.name)];
  const table = [
    "",
    `idle: ${options.rounds} rounds, interleaved; RSS = VmRSS of the server child`,
    formatTable(header, rows),
    "",
    "idle: RSS / V8 heap (after GC) each module adds when imported alone into a bare node process",
    formatTable(["module", ...builds.map((build) => build.name)], moduleRows),
  ].join("\n");
  process.stdout.write(`${table}\n`);
  return { rows: [], builds: builds.map((build) => build.name), readings, modules };
}
