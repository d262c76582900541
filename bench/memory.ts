import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import type { ServerProcess } from "../test/support/process.js";
import {
  buildDist,
  Cleanup,
  checkArguments,
  formatTable,
  machineInfo,
  parseCountOption,
  RssSampler,
  rssKb,
  serverEnv,
  sleep,
  startServerChild,
  textOption,
  writeResults,
} from "./support.js";

const OPTION_FLAGS = ["--scenario", "--streams", "--connections", "--pipelined", "--sessions"] as const;
const SCENARIOS = ["stalled", "historic", "unread"] as const;
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
      formatTable(["measure", "measured"], rows),
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
