import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { Agent, request } from "node:http";
import path from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import type { Connection, RowDataPacket } from "mysql2/promise";
import { nowMs, SseClients, type SseStream } from "./sse-clients.js";
import {
  Cleanup,
  CpuMeter,
  checkArguments,
  clockTicksPerSecond,
  formatRate,
  formatTable,
  machineInfo,
  parseCountOption,
  RssSampler,
  rssKb,
  type ServerChild,
  serverEnv,
  sleep,
  startBenchDatabase,
  startServerChild,
  writeResults,
} from "./support.js";

const DEFAULT_CLIENTS = 1000;
const DEFAULT_IDLE = 10_000;
const DEFAULT_CATCHUP = 1_000_000;
const OPTION_FLAGS = ["--clients", "--idle", "--catchup"] as const;
const SWITCHES = ["--pin"] as const;

/** The publish run: this many events at this total rate from this many concurrent publishers. */
const PUBLISH_EVENTS = 1000;
const PUBLISH_RATE = 200;
const PUBLISHERS = 4;
const FAN_SUBJECT = "fan/1";
/** Idle streams get a subject of their own without history, so that they really stay idle. */
const IDLE_SUBJECT = "idle/1";
const CATCH_SUBJECT = "catch/1";
const MAX_TOTAL_CLIENTS = 20_000;

const WAVE = 500;
const CONNECT_TIMEOUT_MS = 30_000;
/** monitorEventLoopDelay samples every this many ms; the delay reported is beyond it. */
const LOOP_RESOLUTION_MS = 10;
/** Pause before an RSS reading, so that connection set-up garbage and timers settle. */
const SETTLE_MS = 3_000;
/** How long clients may still receive after the last publish before the rest counts as lost. */
const DELIVERY_GRACE_MS = 30_000;
const STREAMS_GONE_TIMEOUT_MS = 15_000;
const CATCHUP_STATEMENT_ROWS = 500;
const CATCHUP_DATA_BYTES = 100;
/** File descriptors beyond the streams: MariaDB pool, log pipes, node internals. */
const FD_HEADROOM = 1024;
const RAISED_ENV = "EVENTSDB_BENCH_NOFILE_RAISED";

const TARGET_LOST = 0;
const TARGET_P99_MS = 100;
const TARGET_KB_PER_IDLE_CLIENT = 24;
const TARGET_RSS_10K_MIB = 400;
const TARGET_CATCHUP_EPS = 100_000;
const REFERENCE = "Go Events DB at 1000 SSE clients: p99 158–172 ms and about a third of the events lost";

interface Options {
  clients: number;
  idle: number;
  catchup: number;
  /** Server on CPU 0 alone; bench process and MariaDB on the other CPUs (taskset). */
  pin: boolean;
}

function parseOptions(args: readonly string[]): Options {
  checkArguments("fanout", args, OPTION_FLAGS, SWITCHES);
  return {
    clients: parseCountOption(args, "--clients", DEFAULT_CLIENTS, 1),
    idle: parseCountOption(args, "--idle", DEFAULT_IDLE, 0),
    catchup: parseCountOption(args, "--catchup", DEFAULT_CATCHUP, 0),
    pin: args.includes("--pin"),
  };
}

/** `taskset` every thread of a process onto a CPU list, e.g. "0" or "1-3". */
async function pinProcess(pid: number, cpus: string): Promise<void> {
  await execText("taskset", ["-a", "-p", "-c", cpus, String(pid)]);
}

/**
 * `npm run bench -- fanout [--clients N] [--idle N] [--catchup N] [--pin]`: SSE fan-out against a
 * throwaway MariaDB. `--idle 0` or `--catchup 0` skip those parts. `--pin` gives the server CPU 0
 * to itself and puts this process and MariaDB on the others, so that on a small machine the
 * clients do not take CPU time from the server they measure.
 *
 * 1. fan-out server: RSS idle, with N idle clients on fan/1, and at peak while 1000 events are
 *    published at 200/s by 4 publishers; latency (receive − sentAt) and completeness per client.
 * 2. idle server (a fresh process, so its idle RSS is a clean baseline): N idle streams opened in
 *    waves of 500; RSS per idle client and app_active_event_streams.
 * 3. same server: catch-up of N events inserted directly into MariaDB, read by one SSE client.
 */
export async function runFanout(args: readonly string[]): Promise<void> {
  const options = parseOptions(args);
  const files = await ensureFileLimit(options, args);
  if (files === "rerun") return;

  const cleanup = new Cleanup();
  const removeSignalHandlers = cleanup.onSignals();
  try {
    const { mariadb, admin, mariadbVersion } = await startBenchDatabase(cleanup, "eventsdb");
    const clockTicks = await clockTicksPerSecond();
    const env = serverEnv(mariadb.url);
    // All the bench's clients come from one address without a token: one "client" to the server.
    const serverArgs = [
      "--max-total-clients",
      String(MAX_TOTAL_CLIENTS),
      "--max-streams-per-client",
      String(MAX_TOTAL_CLIENTS),
    ];
    const cpuCount = machineInfo().cpus;
    if (options.pin && cpuCount < 2) throw new Error("--pin needs at least 2 CPUs");
    const othersCpus = `1-${cpuCount - 1}`;
    if (options.pin) {
      await pinProcess(process.pid, othersCpus);
      await pinProcess(mariadb.pid, othersCpus);
    }
    const startServer = async (): Promise<ServerChild> => {
      const server = await startServerChild(env, serverArgs);
      if (options.pin) await pinProcess(server.pid, "0");
      return server;
    };

    // ---- 1. fan-out: idle RSS, N idle clients, publish run -------------------------------------
    process.stderr.write("bench: starting the fan-out server\n");
    const fanServer = await startServer();
    cleanup.add("stop fan-out server", () => fanServer.stop());
    const fan = await fanOut(fanServer, admin, options.clients, clockTicks, mariadb.pid, cleanup);
    process.stderr.write("bench: stopping the fan-out server\n");
    const fanStopStarted = performance.now();
    await fanServer.stop();
    const fanStopSeconds = (performance.now() - fanStopStarted) / 1000;

    // ---- 2. + 3. idle streams and catch-up ------------------------------------------------------
    // A fresh server, so that its idle RSS is a clean baseline for the per-stream figure. The
    // catch-up rows are inserted while it runs and read from it; then once more from a server
    // started after the insert, for which they are history rather than foreign commits.
    let idle: IdleResult | undefined;
    let catchup: CatchUpResult | undefined;
    const laterServers: ServerChild[] = [];
    if (options.idle > 0 || options.catchup > 0) {
      process.stderr.write("bench: starting the idle/catch-up server\n");
      const server = await startServer();
      laterServers.push(server);
      cleanup.add("stop idle/catch-up server", () => server.stop());
      if (options.idle > 0) idle = await idleStreams(server, options.idle, cleanup);
      if (options.catchup > 0) {
        const insert = await insertCatchUp(admin, options.catchup);
        const pids = { mariadb: mariadb.pid, ticks: clockTicks };
        const live = await readCatchUp(
          server,
          options.catchup,
          "rows inserted while the server ran",
          pids,
          cleanup,
        );
        await server.stop();
        process.stderr.write("bench: starting a server after the insert\n");
        const after = await startServer();
        laterServers.push(after);
        cleanup.add("stop catch-up server", () => after.stop());
        const fresh = await readCatchUp(
          after,
          options.catchup,
          "rows stored before the server started",
          pids,
          cleanup,
        );
        await after.stop();
        catchup = { insert, live, fresh };
      }
      await server.stop();
    }

    // ---- report --------------------------------------------------------------------------------
    const rows = tableRows(options, fan, idle, catchup);
    const header = ["measure", "measured", "target", "vs target"];
    const table = formatTable(header, rows);
    const machine = { ...machineInfo(), mariadb: mariadbVersion };
    const serverLog = [...fanServer.logLines, ...laterServers.flatMap((server) => server.logLines)];
    const lines = [
      "",
      `fanout: ${options.clients} clients on ${FAN_SUBJECT}, ${PUBLISH_EVENTS} events at ${PUBLISH_RATE}/s from ` +
        `${PUBLISHERS} publishers; ${formatRate(options.idle)} idle streams; catch-up of ${formatRate(options.catchup)} ` +
        `events; MariaDB ${mariadbVersion}, ${machine.cpus} × ${machine.cpuModel}, Node ${machine.node}`,
      "",
      table,
      "",
      `reference: ${REFERENCE}`,
      options.pin
        ? `CPUs pinned: server on CPU 0 alone, bench process and MariaDB on CPUs ${othersCpus}`
        : "CPUs not pinned: server, bench process and MariaDB share all CPUs (--pin separates them)",
      "RSS = VmRSS of the server process (MiB = 1024 KiB); per-client RSS against a fresh server's idle RSS",
      `publish run: server CPU ${percent(fan.cpu.server)}, MariaDB CPU ${percent(fan.cpu.mariadb)}, bench process CPU ` +
        `${percent(fan.cpu.bench)} (of one core); bench event-loop delay beyond ${LOOP_RESOLUTION_MS} ms: p99 ${fan.benchLoopDelay.p99Ms.toFixed(1)} ms, ` +
        `max ${fan.benchLoopDelay.maxMs.toFixed(1)} ms`,
      `publish run: POST p50 ${fan.publish.postP50Ms.toFixed(1)} ms, p99 ${fan.publish.postP99Ms.toFixed(1)} ms, ` +
        `max ${fan.publish.postMaxMs.toFixed(1)} ms, most in flight per publisher ${fan.publish.maxInFlight}, ` +
        `late sends ${fan.publish.lateSends}, ` +
        `${fan.publish.failed} failed; all delivered ${fan.deliveredAfterLastPostMs === undefined ? "never (timed out)" : `${fan.deliveredAfterLastPostMs.toFixed(0)} ms after the last POST`}; ` +
        `buffer overflows ${fan.metricsAfter.overflows}, catch-up fallbacks ${fan.metricsAfter.catchUpFallbacks}`,
      ...(catchup === undefined
        ? []
        : [
            `catch-up: ${formatRate(catchup.insert.events)} rows inserted at ${formatRate(catchup.insert.rowsPerSecond)} rows/s`,
            ...[catchup.live, catchup.fresh].flatMap((read) =>
              read === undefined
                ? []
                : [
                    `catch-up (${read.setting}): first frame after ${read.firstFrameMs.toFixed(0)} ms, ` +
                      `${formatRate(read.frames)} frames in ${read.seconds.toFixed(2)} s, order errors ${read.orderErrors}, ` +
                      `bad frames ${read.badFrames}, server CPU ${percent(read.serverCpu)}, MariaDB CPU ${percent(read.mariadbCpu)}, ` +
                      `server RSS ${mib(read.rssBeforeKb)} -> peak ${mib(read.rssPeakKb)}`,
                  ],
            ),
          ]),
      `fan-out server heap used / total / external: idle ${heapLine(fan.heap.idle)}; ${formatRate(fan.clients)} streams ` +
        `${heapLine(fan.heap.clients)}; after publishing ${heapLine(fan.heap.afterPublish)}`,
      ...(idle === undefined
        ? []
        : [
            `idle server heap used / total / external: idle ${heapLine(idle.heapIdle)}; ${formatRate(idle.opened)} streams ` +
              `${heapLine(idle.heapStreams)}; events received by idle streams: ${idle.eventsReceived}`,
          ]),
      `fan-out server stopped (SIGTERM) in ${fanStopSeconds.toFixed(2)} s; server log lines at warn or above: ${serverLog.length}`,
    ];
    process.stdout.write(`${lines.join("\n")}\n`);

    const file = await writeResults("fanout", {
      suite: "fanout",
      finishedAt: new Date().toISOString(),
      options,
      fileLimit: files,
      machine,
      publish: { events: PUBLISH_EVENTS, rate: PUBLISH_RATE, publishers: PUBLISHERS, subject: FAN_SUBJECT },
      fanout: fan,
      fanServerStopSeconds: fanStopSeconds,
      idle,
      catchup,
      targets: {
        lost: TARGET_LOST,
        p99Ms: TARGET_P99_MS,
        kbPerIdleClient: TARGET_KB_PER_IDLE_CLIENT,
        rss10kMiB: TARGET_RSS_10K_MIB,
        catchupEventsPerSecond: TARGET_CATCHUP_EPS,
      },
      reference: REFERENCE,
      serverLog,
      table,
    });
    process.stdout.write(`results: ${path.relative(process.cwd(), file)}\n`);
  } finally {
    await cleanup.run();
    removeSignalHandlers();
  }
}

// ---- file descriptors -----------------------------------------------------------------------------

interface FileLimit {
  soft: number;
  hard: number;
  needed: number;
}

/**
 * Each side (bench client, server child) holds one descriptor per stream. When the soft limit is
 * too low but the hard limit allows, re-runs this suite under `sh -c 'ulimit -n …'` (the server
 * child inherits the raised limit) and returns "rerun"; when even the hard limit is too low, fails.
 */
async function ensureFileLimit(options: Options, args: readonly string[]): Promise<FileLimit | "rerun"> {
  const output = await execText("sh", ["-c", "ulimit -Sn; ulimit -Hn"]);
  const [soft, hard] = output
    .trim()
    .split("\n")
    .map((value) => (value.trim() === "unlimited" ? Number.POSITIVE_INFINITY : Number(value.trim())));
  const limit = {
    soft: soft ?? 0,
    hard: hard ?? 0,
    needed: Math.max(options.idle, options.clients) + FD_HEADROOM,
  };
  if (limit.soft >= limit.needed) return limit;
  if (process.env[RAISED_ENV] === "1" || limit.hard < limit.needed) {
    throw new Error(
      `${limit.needed} open files needed per process, ulimit -n is ${limit.soft} (hard ${limit.hard}); ` +
        "raise the hard limit (e.g. --ulimit nofile=65536 for a container) or pass a smaller --idle",
    );
  }
  const raised = Math.min(limit.hard, 65_536);
  process.stderr.write(`bench: ulimit -n ${limit.soft} is too low; re-running with ulimit -n ${raised}\n`);
  const script = process.argv[1];
  if (script === undefined) throw new Error("cannot re-run: process.argv[1] is missing");
  const child = spawn(
    "sh",
    [
      "-c",
      `ulimit -n ${raised} && exec "$0" "$@"`,
      process.execPath,
      ...process.execArgv,
      script,
      "fanout",
      ...args,
    ],
    { stdio: "inherit", env: { ...process.env, [RAISED_ENV]: "1" } },
  );
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  process.on("SIGINT", forward);
  process.on("SIGTERM", forward);
  try {
    const code = await new Promise<number>((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", (exitCode, signal) => resolve(exitCode ?? (signal === "SIGINT" ? 130 : 143)));
    });
    if (code !== 0) throw new Error(`fanout under ulimit -n ${raised} failed (exit code ${code})`);
  } finally {
    process.off("SIGINT", forward);
    process.off("SIGTERM", forward);
  }
  return "rerun";
}

function execText(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, (error, stdout) => (error === null ? resolve(stdout) : reject(error)));
  });
}

/** The server's own view of its memory (prom-client default metrics), in KiB. */
interface HeapMetrics {
  rssKb: number;
  heapTotalKb: number;
  heapUsedKb: number;
  externalKb: number;
}

async function heapMetrics(server: ServerChild): Promise<HeapMetrics> {
  const response = await fetch(`${server.baseUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const text = await response.text();
  const kb = (name: string) => {
    const match = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
    return match === null ? Number.NaN : Number(match[1]) / 1024;
  };
  return {
    rssKb: kb("process_resident_memory_bytes"),
    heapTotalKb: kb("nodejs_heap_size_total_bytes"),
    heapUsedKb: kb("nodejs_heap_size_used_bytes"),
    externalKb: kb("nodejs_external_memory_bytes"),
  };
}

interface StreamMetrics {
  activeStreams: number;
  overflows: number;
  catchUpFallbacks: number;
  streamErrors: number;
}

async function streamMetrics(server: ServerChild): Promise<StreamMetrics> {
  const response = await fetch(`${server.baseUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`GET /metrics answered ${response.status}`);
  const value = (pattern: RegExp) => {
    const match = pattern.exec(text);
    return match === null ? 0 : Number(match[1]);
  };
  return {
    activeStreams: value(/^app_active_event_streams (\S+)$/m),
    overflows: value(/^eventsdb_stream_buffer_overflows_total (\S+)$/m),
    catchUpFallbacks: value(/^eventsdb_stream_catch_up_fallbacks_total (\S+)$/m),
    streamErrors: value(/^app_event_operations_total\{operation="stream_events",status="error"\} (\S+)$/m),
  };
}

/** Polls /metrics until app_active_event_streams is at most `expected` (streams closed server-side). */
async function waitForStreams(server: ServerChild, expected: number): Promise<number> {
  const deadline = Date.now() + STREAMS_GONE_TIMEOUT_MS;
  for (;;) {
    const { activeStreams } = await streamMetrics(server);
    if (activeStreams <= expected || Date.now() >= deadline) return activeStreams;
    await sleep(100);
  }
}

function assertAlive(server: ServerChild): void {
  const exit = server.exited();
  if (exit !== undefined) throw new Error(`the server died during the run (${exit})`);
}

// ---- opening streams ------------------------------------------------------------------------------

interface ConnectResult {
  opened: SseStream[];
  /** By index: the stream, or undefined when it failed. */
  byIndex: (SseStream | undefined)[];
  failures: number;
  failureReasons: Record<string, number>;
  seconds: number;
}

/** Opens `count` streams in waves of WAVE; each must answer 200 and its `retry:` line. */
async function openStreams(
  clients: SseClients,
  count: number,
  path: (index: number) => string,
  onEvent: ((index: number) => (id: number, data: string, receivedAtMs: number) => void) | undefined,
): Promise<ConnectResult> {
  const opened: SseStream[] = [];
  const byIndex: (SseStream | undefined)[] = [];
  const failureReasons: Record<string, number> = {};
  let failures = 0;
  const started = performance.now();
  for (let first = 0; first < count; first += WAVE) {
    const wave = Array.from({ length: Math.min(WAVE, count - first) }, (_, i) =>
      clients.open(path(first + i), {
        timeoutMs: CONNECT_TIMEOUT_MS,
        ...(onEvent === undefined ? {} : { onEvent: onEvent(first + i) }),
      }),
    );
    for (const result of await Promise.allSettled(wave)) {
      if (result.status === "fulfilled") {
        opened.push(result.value);
        byIndex.push(result.value);
      } else {
        byIndex.push(undefined);
        failures++;
        const reason = result.reason instanceof Error ? result.reason.message : String(result.reason);
        failureReasons[reason] = (failureReasons[reason] ?? 0) + 1;
      }
    }
    if (count > WAVE) process.stderr.write(`bench:   ${opened.length} streams open, ${failures} failed\n`);
  }
  return { opened, byIndex, failures, failureReasons, seconds: (performance.now() - started) / 1000 };
}

// ---- 1. fan-out -----------------------------------------------------------------------------------

/** What one fan-out client saw, by event id (index = id − base − 1). */
class FanClient {
  readonly seen: Uint8Array;
  lastId = 0;
  distinct = 0;
  duplicates = 0;
  outOfOrder = 0;
  unexpected = 0;

  constructor(capacity: number) {
    this.seen = new Uint8Array(capacity);
  }
}

/** Every client's frames: completeness per client, latency per first receipt. */
class FanState {
  readonly clients: FanClient[];
  readonly #base: number;
  readonly #capacity: number;
  /** Per event id: its data text as first received (others must match) and its sentAt. */
  readonly #events = new Map<number, { data: string; sentAt: number }>();
  readonly latencies: Float64Array;
  latencyCount = 0;
  firstReceipts = 0;
  badFrames = 0;

  constructor(clientCount: number, base: number, capacity: number) {
    this.#base = base;
    this.#capacity = capacity;
    this.clients = Array.from({ length: clientCount }, () => new FanClient(capacity));
    this.latencies = new Float64Array(clientCount * PUBLISH_EVENTS);
  }

  handler(index: number): (id: number, data: string, receivedAtMs: number) => void {
    const client = this.clients[index] as FanClient;
    return (id, data, receivedAtMs) => this.#onEvent(client, id, data, receivedAtMs);
  }

  #onEvent(client: FanClient, id: number, data: string, receivedAtMs: number): void {
    const slot = id - this.#base - 1;
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.#capacity) {
      client.unexpected++;
      return;
    }
    const seen = client.seen[slot] as number;
    if (seen !== 0) {
      client.duplicates++;
      if (seen < 255) client.seen[slot] = seen + 1;
      return;
    }
    client.seen[slot] = 1;
    client.distinct++;
    this.firstReceipts++;
    if (id < client.lastId) client.outOfOrder++;
    else client.lastId = id;

    let known = this.#events.get(id);
    if (known === undefined) {
      const sentAt = parseSentAt(id, data);
      if (sentAt === undefined) {
        this.badFrames++;
        return;
      }
      known = { data, sentAt };
      this.#events.set(id, known);
    } else if (known.data !== data) {
      // Every client must get the same bytes; the first copy was parsed and checked.
      this.badFrames++;
      return;
    }
    if (this.latencyCount < this.latencies.length) {
      this.latencies[this.latencyCount++] = receivedAtMs - known.sentAt;
    }
  }
}

/** The `sentAt` of a simple-JSON event frame on FAN_SUBJECT with this id, else undefined. */
function parseSentAt(id: number, data: string): number | undefined {
  try {
    const event = JSON.parse(data) as { id?: unknown; subject?: unknown; data?: unknown };
    if (event.id !== id || event.subject !== FAN_SUBJECT || typeof event.data !== "string") return undefined;
    const payload = JSON.parse(Buffer.from(event.data, "base64").toString("utf8")) as { sentAt?: unknown };
    return typeof payload.sentAt === "number" && Number.isFinite(payload.sentAt) ? payload.sentAt : undefined;
  } catch {
    return undefined;
  }
}

interface PublishResult {
  ids: number[];
  failed: number;
  failureReasons: Record<string, number>;
  /** From the first scheduled send to the last send (the offered rate's window). */
  sendSeconds: number;
  /** Sends per second over sendSeconds: the offered load. */
  offeredRate: number;
  /** Sends that left more than 5 ms after their scheduled time (the bench's timers lagged). */
  lateSends: number;
  /** Most POSTs one publisher had in flight at once (open loop: a slow server gets more). */
  maxInFlight: number;
  postP50Ms: number;
  postP99Ms: number;
  postMaxMs: number;
  lastPostAt: number;
}

/**
 * PUBLISH_EVENTS events at PUBLISH_RATE/s in total from PUBLISHERS publishers, each on its own
 * keep-alive agent. Open loop: every event leaves at its scheduled time (timers, no busy loop)
 * whether or not earlier POSTs were answered, so a slow server cannot lower the offered rate;
 * a publisher opens another connection when all of its connections are busy.
 */
async function publish(baseUrl: string): Promise<PublishResult> {
  const url = new URL(baseUrl);
  const interval = 1000 / PUBLISH_RATE;
  const ids: number[] = [];
  const postLatencies: number[] = [];
  const failureReasons: Record<string, number> = {};
  let failed = 0;
  let lateSends = 0;
  let lastPostAt = 0;
  let lastSendAt = 0;
  let maxInFlight = 0;
  const started = performance.now();
  const send = async (agent: Agent) => {
    const sentAt = nowMs();
    const body = JSON.stringify({
      source: "bench",
      type: "t",
      subject: FAN_SUBJECT,
      data: Buffer.from(JSON.stringify({ sentAt })).toString("base64"),
    });
    const t0 = performance.now();
    lastSendAt = t0;
    try {
      const response = await post(url, agent, body);
      postLatencies.push(performance.now() - t0);
      const parsed = response.status === 200 ? (JSON.parse(response.body) as { id?: unknown }) : {};
      if (typeof parsed.id === "number") ids.push(parsed.id);
      else {
        failed++;
        const reason = `HTTP ${response.status} ${response.body.slice(0, 200)}`;
        failureReasons[reason] = (failureReasons[reason] ?? 0) + 1;
      }
    } catch (error) {
      failed++;
      const reason = error instanceof Error ? error.message : String(error);
      failureReasons[reason] = (failureReasons[reason] ?? 0) + 1;
    }
    lastPostAt = Math.max(lastPostAt, performance.now());
  };
  const publisher = async (p: number) => {
    const agent = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });
    const inFlight = new Set<Promise<void>>();
    try {
      for (let k = p; k < PUBLISH_EVENTS; k += PUBLISHERS) {
        const wait = started + k * interval - performance.now();
        if (wait > 0) await sleep(wait);
        else if (wait < -5) lateSends++;
        const sending: Promise<void> = send(agent).finally(() => inFlight.delete(sending));
        inFlight.add(sending);
        maxInFlight = Math.max(maxInFlight, inFlight.size);
      }
      await Promise.all(inFlight);
    } finally {
      agent.destroy();
    }
  };
  await Promise.all(Array.from({ length: PUBLISHERS }, (_, p) => publisher(p)));
  const sendSeconds = (lastSendAt - started) / 1000;
  const sorted = Float64Array.from(postLatencies).sort();
  return {
    ids: ids.sort((a, b) => a - b),
    failed,
    failureReasons,
    sendSeconds,
    // PUBLISH_EVENTS − 1 intervals between the first and the last send.
    offeredRate: sendSeconds > 0 ? (PUBLISH_EVENTS - 1) / sendSeconds : Number.NaN,
    lateSends,
    maxInFlight,
    postP50Ms: nearestRank(sorted, 50),
    postP99Ms: nearestRank(sorted, 99),
    postMaxMs: sorted.length === 0 ? Number.NaN : (sorted[sorted.length - 1] as number),
    lastPostAt,
  };
}

function post(url: URL, agent: Agent, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: "/events",
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
        timeout: 30_000,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          text += chunk;
        });
        res.once("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.once("error", reject);
      },
    );
    req.once("timeout", () => req.destroy(new Error("POST timed out after 30 s")));
    req.once("error", reject);
    req.end(body);
  });
}

/** Nearest-rank percentile of an ascending array. */
function nearestRank(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

interface FanResult {
  clients: number;
  connect: { opened: number; failures: number; failureReasons: Record<string, number>; seconds: number };
  rssIdleKb: number;
  rssClientsKb: number;
  rssPeakKb: number;
  heap: { idle: HeapMetrics; clients: HeapMetrics; afterPublish: HeapMetrics };
  rssSamples: number;
  publish: Omit<PublishResult, "ids" | "lastPostAt"> & { ok: number };
  latencyMs: { count: number; p50: number; p90: number; p99: number; p999: number; max: number; min: number };
  completeness: {
    expectedPerClient: number;
    lost: number;
    clientsMissingEvents: number;
    duplicates: number;
    outOfOrder: number;
    unexpected: number;
    badFrames: number;
    streamsEndedEarly: number;
  };
  deliveredAfterLastPostMs: number | undefined;
  cpu: Record<string, number>;
  benchLoopDelay: { p99Ms: number; maxMs: number };
  metricsAfter: StreamMetrics;
  activeStreamsAfterClose: number;
}

async function fanOut(
  server: ServerChild,
  admin: Connection,
  count: number,
  ticks: number,
  mariadbPid: number,
  cleanup: Cleanup,
): Promise<FanResult> {
  await sleep(1000);
  const heapIdle = await heapMetrics(server);
  const rssIdleKb = await rssKb(server.pid);

  // Ids above the sequence's current value belong to this run (nothing else writes meanwhile).
  const [sequenceRows] = await admin.query<RowDataPacket[]>(
    "SELECT last_id FROM event_sequence WHERE name = 'events'",
  );
  const base = Number(sequenceRows[0]?.last_id ?? 0);
  const state = new FanState(count, base, PUBLISH_EVENTS * 4);

  const clients = new SseClients(server.baseUrl);
  cleanup.add("close fan-out streams", async () => clients.closeAll());
  process.stderr.write(`bench: opening ${count} streams on ${FAN_SUBJECT}\n`);
  const streamPath = `/events/stream?subject=${encodeURIComponent(FAN_SUBJECT)}`;
  const connect = await openStreams(
    clients,
    count,
    () => streamPath,
    (i) => state.handler(i),
  );
  if (connect.failures > 0) {
    process.stderr.write(
      `bench: ${connect.failures} streams failed: ${JSON.stringify(connect.failureReasons)}\n`,
    );
  }
  await sleep(SETTLE_MS);
  assertAlive(server);
  const rssClientsKb = await rssKb(server.pid);
  const heapClients = await heapMetrics(server);

  process.stderr.write(
    `bench: publishing ${PUBLISH_EVENTS} events at ${PUBLISH_RATE}/s from ${PUBLISHERS} publishers\n`,
  );
  const sampler = new RssSampler(server.pid);
  const cpu = new CpuMeter({ server: server.pid, mariadb: mariadbPid }, ticks);
  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  await cpu.start();
  loop.enable();
  sampler.start();
  const published = await publish(server.baseUrl);
  const expected = connect.opened.length * published.ids.length;
  const deadline = performance.now() + DELIVERY_GRACE_MS;
  while (state.firstReceipts < expected && performance.now() < deadline) await sleep(20);
  const deliveredAt = performance.now();
  const delivered = state.firstReceipts >= expected;
  const rss = await sampler.stop();
  loop.disable();
  const cpuUse = await cpu.stop();
  assertAlive(server);
  const metricsAfter = await streamMetrics(server);
  const heapAfterPublish = await heapMetrics(server);

  // Completeness over the ids the server acknowledged, per client that opened.
  let lost = 0;
  let clientsMissingEvents = 0;
  let duplicates = 0;
  let outOfOrder = 0;
  let unexpected = 0;
  state.clients.forEach((client, index) => {
    duplicates += client.duplicates;
    outOfOrder += client.outOfOrder;
    unexpected += client.unexpected;
    if (connect.byIndex[index] === undefined) return; // never opened: counted as a failed stream
    let missing = 0;
    for (const id of published.ids) if (client.seen[id - base - 1] === 0) missing++;
    lost += missing;
    if (missing > 0) clientsMissingEvents++;
  });
  const streamsEndedEarly = connect.opened.filter((stream) => stream.ended !== undefined).length;

  const sorted = state.latencies.subarray(0, state.latencyCount).sort();
  const latencyMs = {
    count: sorted.length,
    min: sorted.length === 0 ? Number.NaN : (sorted[0] as number),
    p50: nearestRank(sorted, 50),
    p90: nearestRank(sorted, 90),
    p99: nearestRank(sorted, 99),
    p999: nearestRank(sorted, 99.9),
    max: sorted.length === 0 ? Number.NaN : (sorted[sorted.length - 1] as number),
  };

  process.stderr.write("bench: closing the fan-out streams\n");
  clients.closeAll();
  const activeStreamsAfterClose = await waitForStreams(server, 0);
  const { ids, lastPostAt, ...publishRest } = published;
  return {
    clients: count,
    connect: {
      opened: connect.opened.length,
      failures: connect.failures,
      failureReasons: connect.failureReasons,
      seconds: connect.seconds,
    },
    rssIdleKb,
    rssClientsKb,
    rssPeakKb: rss.peakKb,
    heap: { idle: heapIdle, clients: heapClients, afterPublish: heapAfterPublish },
    rssSamples: rss.samples,
    publish: { ...publishRest, ok: ids.length },
    latencyMs,
    completeness: {
      expectedPerClient: ids.length,
      lost,
      clientsMissingEvents,
      duplicates,
      outOfOrder,
      unexpected,
      badFrames: state.badFrames,
      streamsEndedEarly,
    },
    deliveredAfterLastPostMs: delivered ? Math.max(0, deliveredAt - lastPostAt) : undefined,
    cpu: cpuUse,
    benchLoopDelay: {
      p99Ms: Math.max(0, loop.percentile(99) / 1e6 - LOOP_RESOLUTION_MS),
      maxMs: Math.max(0, loop.max / 1e6 - LOOP_RESOLUTION_MS),
    },
    metricsAfter,
    activeStreamsAfterClose,
  };
}

// ---- 2. idle streams ------------------------------------------------------------------------------

interface IdleResult {
  streams: number;
  opened: number;
  failures: number;
  failureReasons: Record<string, number>;
  connectSeconds: number;
  rssIdleKb: number;
  rssStreamsKb: number;
  rssPeakWhileConnectingKb: number;
  kbPerStream: number;
  activeStreamsMetric: number;
  /** Events the idle streams received (there are none to receive). */
  eventsReceived: number;
  heapIdle: HeapMetrics;
  heapStreams: HeapMetrics;
  /** Streams the bench still held open when /metrics was read. */
  openWhenCounted: number;
  endedEarly: number;
  activeStreamsAfterClose: number;
}

async function idleStreams(server: ServerChild, count: number, cleanup: Cleanup): Promise<IdleResult> {
  await sleep(1000);
  const heapIdle = await heapMetrics(server);
  const rssIdleKb = await rssKb(server.pid);
  const clients = new SseClients(server.baseUrl);
  cleanup.add("close idle streams", async () => clients.closeAll());
  process.stderr.write(`bench: opening ${formatRate(count)} idle streams in waves of ${WAVE}\n`);
  const sampler = new RssSampler(server.pid);
  sampler.start();
  const streamPath = `/events/stream?subject=${encodeURIComponent(IDLE_SUBJECT)}`;
  let eventsReceived = 0;
  const countEvents = () => {
    eventsReceived++;
  };
  const connect = await openStreams(
    clients,
    count,
    () => streamPath,
    () => countEvents,
  );
  if (connect.failures > 0) {
    process.stderr.write(
      `bench: ${connect.failures} streams failed: ${JSON.stringify(connect.failureReasons)}\n`,
    );
  }
  const connecting = await sampler.stop();
  await sleep(SETTLE_MS);
  assertAlive(server);
  const rssStreamsKb = await rssKb(server.pid);
  const openWhenCounted = clients.size;
  const { activeStreams } = await streamMetrics(server);
  const heapStreams = await heapMetrics(server);
  const endedEarly = connect.opened.filter((stream) => stream.ended !== undefined).length;
  process.stderr.write("bench: closing the idle streams\n");
  clients.closeAll();
  const activeStreamsAfterClose = await waitForStreams(server, 0);
  return {
    streams: count,
    opened: connect.opened.length,
    failures: connect.failures,
    failureReasons: connect.failureReasons,
    connectSeconds: connect.seconds,
    rssIdleKb,
    rssStreamsKb,
    rssPeakWhileConnectingKb: connecting.peakKb,
    kbPerStream: (rssStreamsKb - rssIdleKb) / count,
    activeStreamsMetric: activeStreams,
    eventsReceived,
    heapIdle,
    heapStreams,
    openWhenCounted,
    endedEarly,
    activeStreamsAfterClose,
  };
}

// ---- 3. catch-up ----------------------------------------------------------------------------------

interface InsertResult {
  events: number;
  firstId: number;
  seconds: number;
  rowsPerSecond: number;
  sequence: { lastId: number; maxId: number };
}

interface CatchUpRead {
  /** Where the rows came from, relative to this server process. */
  setting: string;
  events: number;
  frames: number;
  seconds: number;
  eventsPerSecond: number;
  firstFrameMs: number;
  orderErrors: number;
  badFrames: number;
  completed: boolean;
  endedEarly: string | undefined;
  rssBeforeKb: number;
  rssPeakKb: number;
  serverCpu: number;
  mariadbCpu: number;
}

interface CatchUpResult {
  insert: InsertResult;
  /** On the server that ran while the rows were inserted (its commit feed sees them as foreign commits). */
  live: CatchUpRead;
  /** On a server started after the insert (the rows are history before its start). */
  fresh: CatchUpRead | undefined;
}

const CATCHUP_INSERT = "INSERT INTO events (id, source, type, subject, time, data) VALUES ?";

/**
 * `count` events on CATCH_SUBJECT straight into the server's database, ids continuing after the
 * current maximum. The ids are reserved in event_sequence first (row locked while read and
 * bumped), so the server's writer can never hand out one of them, then inserted explicitly.
 */
async function insertCatchUp(admin: Connection, count: number): Promise<InsertResult> {
  await admin.query("START TRANSACTION");
  let base: number;
  try {
    const [sequence] = await admin.query<RowDataPacket[]>(
      "SELECT last_id FROM event_sequence WHERE name = 'events' FOR UPDATE",
    );
    const [max] = await admin.query<RowDataPacket[]>("SELECT COALESCE(MAX(id), 0) AS id FROM events");
    base = Math.max(Number(sequence[0]?.last_id ?? 0), Number(max[0]?.id ?? 0));
    await admin.query("UPDATE event_sequence SET last_id = ? WHERE name = 'events'", [base + count]);
    await admin.query("COMMIT");
  } catch (error) {
    await admin.query("ROLLBACK");
    throw error;
  }

  process.stderr.write(
    `bench: inserting ${formatRate(count)} events into ${CATCH_SUBJECT} (${CATCHUP_STATEMENT_ROWS}-row INSERTs)\n`,
  );
  const time = new Date().toISOString().replace("T", " ").replace("Z", "");
  const started = performance.now();
  let nextReport = 100_000;
  for (let done = 0; done < count; done += CATCHUP_STATEMENT_ROWS) {
    const n = Math.min(CATCHUP_STATEMENT_ROWS, count - done);
    const bytes = randomBytes(n * CATCHUP_DATA_BYTES);
    const rows = Array.from({ length: n }, (_, i) => [
      base + done + i + 1,
      "bench",
      "bench.catchup",
      CATCH_SUBJECT,
      time,
      bytes.subarray(i * CATCHUP_DATA_BYTES, (i + 1) * CATCHUP_DATA_BYTES),
    ]);
    await admin.query(CATCHUP_INSERT, [rows]);
    if (done + n >= nextReport) {
      process.stderr.write(`bench:   ${formatRate(done + n)} inserted\n`);
      nextReport += 100_000;
    }
  }
  const seconds = (performance.now() - started) / 1000;
  // The sequence was bumped up front; make sure it is (still) at least the new max id.
  await admin.query(
    "UPDATE event_sequence SET last_id = GREATEST(last_id, (SELECT MAX(id) FROM events)) WHERE name = 'events'",
  );
  const [after] = await admin.query<RowDataPacket[]>(
    "SELECT (SELECT last_id FROM event_sequence WHERE name = 'events') AS last_id, " +
      "(SELECT MAX(id) FROM events) AS max_id, (SELECT COUNT(*) FROM events WHERE subject = ?) AS n",
    [CATCH_SUBJECT],
  );
  const sequence = { lastId: Number(after[0]?.last_id), maxId: Number(after[0]?.max_id) };
  if (Number(after[0]?.n) !== count) {
    throw new Error(`${CATCH_SUBJECT} holds ${after[0]?.n} rows, expected ${count}`);
  }
  if (sequence.lastId < sequence.maxId) throw new Error(`event_sequence.last_id ${sequence.lastId} < max id`);
  return { events: count, firstId: base + 1, seconds, rowsPerSecond: count / seconds, sequence };
}

/** One SSE client reads CATCH_SUBJECT from the start and counts frames until it has `count`. */
async function readCatchUp(
  server: ServerChild,
  count: number,
  setting: string,
  pids: { mariadb: number; ticks: number },
  cleanup: Cleanup,
): Promise<CatchUpRead> {
  await sleep(1000);
  assertAlive(server);
  const rssBeforeKb = await rssKb(server.pid);
  const clients = new SseClients(server.baseUrl);
  cleanup.add(`close catch-up stream (${setting})`, async () => clients.closeAll());
  let frames = 0;
  let lastId = 0;
  let orderErrors = 0;
  let badFrames = 0;
  let firstAt = Number.NaN;
  let doneAt = Number.NaN;
  const check = (data: string, id: number) => {
    try {
      const event = JSON.parse(data) as { id?: unknown; subject?: unknown };
      if (event.id !== id || event.subject !== CATCH_SUBJECT) badFrames++;
    } catch {
      badFrames++;
    }
  };
  // Minimal per frame: the id (order check) and a count; the first and last data are parsed.
  const onEvent = (id: number, data: string) => {
    frames++;
    if (!(id > lastId)) orderErrors++;
    lastId = id;
    if (frames === 1) {
      firstAt = performance.now();
      check(data, id);
    }
    if (frames === count) {
      doneAt = performance.now();
      check(data, id);
    }
  };
  process.stderr.write(`bench: reading ${formatRate(count)} events from ${CATCH_SUBJECT} (${setting})\n`);
  const sampler = new RssSampler(server.pid);
  const cpu = new CpuMeter({ server: server.pid, mariadb: pids.mariadb }, pids.ticks);
  await cpu.start();
  sampler.start();
  const started = performance.now();
  const stream = await clients.open(`/events/stream?subject=${encodeURIComponent(CATCH_SUBJECT)}`, {
    timeoutMs: CONNECT_TIMEOUT_MS,
    onEvent,
  });
  // Generous: at 5,000 events/s (twenty times below the target) the run still ends.
  const deadline = started + Math.max(60_000, count / 5);
  let nextReport = started + 10_000;
  while (frames < count && stream.ended === undefined && performance.now() < deadline) {
    await sleep(20);
    if (performance.now() >= nextReport) {
      process.stderr.write(`bench:   ${formatRate(frames)} frames\n`);
      nextReport += 10_000;
    }
  }
  const end = Number.isNaN(doneAt) ? performance.now() : doneAt;
  const rss = await sampler.stop();
  const cpuUse = await cpu.stop();
  const endedEarly = frames < count ? (stream.ended ?? "timed out") : undefined;
  clients.closeAll();
  if (endedEarly !== undefined) {
    process.stderr.write(`bench: the catch-up stream stopped early (${endedEarly}) after ${frames} frames\n`);
  }
  await waitForStreams(server, 0);
  const seconds = (end - started) / 1000;
  return {
    setting,
    events: count,
    frames,
    seconds,
    eventsPerSecond: frames / seconds,
    firstFrameMs: firstAt - started,
    orderErrors,
    badFrames,
    completed: frames >= count,
    endedEarly,
    rssBeforeKb,
    rssPeakKb: rss.peakKb,
    serverCpu: cpuUse.server ?? 0,
    mariadbCpu: cpuUse.mariadb ?? 0,
  };
}

// ---- table ----------------------------------------------------------------------------------------

function mib(kb: number): string {
  return `${(kb / 1024).toFixed(1)} MiB`;
}

function heapLine(heap: HeapMetrics): string {
  const m = (kb: number) => (kb / 1024).toFixed(1);
  return `${m(heap.heapUsedKb)} / ${m(heap.heapTotalKb)} / ${m(heap.externalKb)} MiB`;
}

function percent(fraction: number | undefined): string {
  return fraction === undefined ? "-" : `${(fraction * 100).toFixed(0)} %`;
}

function verdict(ok: boolean): string {
  return ok ? "ok" : "below";
}

function tableRows(
  options: Options,
  fan: FanResult,
  idle: IdleResult | undefined,
  catchup: CatchUpResult | undefined,
): string[][] {
  const n = formatRate(fan.clients);
  const c = fan.completeness;
  const rows: string[][] = [
    ["server RSS idle (fan-out server)", mib(fan.rssIdleKb), "-", "-"],
    [`server RSS, ${n} idle streams`, mib(fan.rssClientsKb), "-", "-"],
    [`server RSS peak while publishing (${fan.rssSamples} samples)`, mib(fan.rssPeakKb), "-", "-"],
    [
      `streams opened / failed (${n} asked)`,
      `${formatRate(fan.connect.opened)} / ${fan.connect.failures}`,
      `${n} / 0`,
      verdict(fan.connect.opened === fan.clients && fan.connect.failures === 0),
    ],
    [
      "events published (2xx) / failed, offered rate",
      `${formatRate(fan.publish.ok)} / ${fan.publish.failed}, ${fan.publish.offeredRate.toFixed(1)}/s`,
      `${formatRate(PUBLISH_EVENTS)} / 0, ${PUBLISH_RATE}/s`,
      verdict(
        fan.publish.ok === PUBLISH_EVENTS &&
          fan.publish.failed === 0 &&
          fan.publish.offeredRate >= PUBLISH_RATE * 0.98,
      ),
    ],
    [
      `events lost (of ${formatRate(fan.publish.ok * fan.connect.opened)} deliveries)`,
      `${formatRate(c.lost)} (${c.clientsMissingEvents} clients)`,
      `${TARGET_LOST}`,
      verdict(c.lost <= TARGET_LOST),
    ],
    ["duplicate frames", formatRate(c.duplicates), "0", verdict(c.duplicates === 0)],
    ["out-of-order frames", formatRate(c.outOfOrder), "0", verdict(c.outOfOrder === 0)],
    [
      "unexpected ids / bad frames",
      `${c.unexpected} / ${c.badFrames}`,
      "0 / 0",
      verdict(c.unexpected === 0 && c.badFrames === 0),
    ],
    [`latency p50 (${n} clients)`, `${fan.latencyMs.p50.toFixed(1)} ms`, "-", "-"],
    [
      `latency p99 (${n} clients)`,
      `${fan.latencyMs.p99.toFixed(1)} ms`,
      `<= ${TARGET_P99_MS} ms`,
      verdict(fan.latencyMs.p99 <= TARGET_P99_MS),
    ],
    [`latency max (${n} clients)`, `${fan.latencyMs.max.toFixed(1)} ms`, "-", "-"],
  ];
  if (idle !== undefined) {
    const m = formatRate(idle.streams);
    rows.push(
      ["server RSS idle (idle server)", mib(idle.rssIdleKb), "-", "-"],
      [
        `idle streams opened / failed (${m} asked)`,
        `${formatRate(idle.opened)} / ${idle.failures} in ${idle.connectSeconds.toFixed(1)} s`,
        `${m} / 0`,
        verdict(idle.opened === idle.streams && idle.failures === 0 && idle.endedEarly === 0),
      ],
      [
        `server RSS, ${m} idle streams`,
        mib(idle.rssStreamsKb),
        options.idle >= 10_000 ? `<= ${TARGET_RSS_10K_MIB} MiB` : "-",
        options.idle >= 10_000 ? verdict(idle.rssStreamsKb / 1024 <= TARGET_RSS_10K_MIB) : "-",
      ],
      [
        "server RSS per idle stream",
        `${idle.kbPerStream.toFixed(1)} KiB`,
        `<= ${TARGET_KB_PER_IDLE_CLIENT} KiB`,
        verdict(idle.kbPerStream <= TARGET_KB_PER_IDLE_CLIENT),
      ],
      [
        "app_active_event_streams",
        formatRate(idle.activeStreamsMetric),
        formatRate(idle.openWhenCounted),
        verdict(idle.activeStreamsMetric === idle.openWhenCounted),
      ],
    );
  }
  if (catchup !== undefined) {
    for (const read of [catchup.fresh, catchup.live]) {
      if (read === undefined) continue;
      rows.push(
        [
          `catch-up read of ${formatRate(read.events)} events (${read.setting})`,
          `${formatRate(read.eventsPerSecond)} events/s`,
          `>= ${formatRate(TARGET_CATCHUP_EPS)}/s`,
          verdict(read.completed && read.orderErrors === 0 && read.eventsPerSecond >= TARGET_CATCHUP_EPS),
        ],
        [`server RSS peak during that catch-up`, mib(read.rssPeakKb), "-", "-"],
      );
    }
  }
  return rows;
}
