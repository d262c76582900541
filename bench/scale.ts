import { mkdtemp, rm } from "node:fs/promises";
import { Agent } from "node:http";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import type { RowDataPacket } from "mysql2/promise";
import type { ServerProcess } from "../test/support/process.js";
import { nowMs, SseClients } from "./sse-clients.js";
import {
  Cleanup,
  CpuMeter,
  checkArguments,
  checkoutBuild,
  clockTicksPerSecond,
  formatTable,
  machineInfo,
  parseCountOption,
  parseDuration,
  percentile,
  postEvent,
  serverEnv,
  sleep,
  startBenchDatabase,
  startServerChild,
  textOption,
  writeResults,
} from "./support.js";

/** The last commit before the feed watched event_sequence (it polled the events table every 250 ms). */
export const PRE_WATCH_REVISION = "1932235";
const DEFAULT_INSTANCES = [1, 3, 10];
const DEFAULT_SECONDS = 10;
const DEFAULT_IDLE_SECONDS = 5;
/** Events per second in total, spread over the instances' publishers. */
const DEFAULT_RATE = 200;
/** How long to wait for the last deliveries after the last POST was answered. */
const DRAIN_MS = 5000;
const SUBJECT = "scale";

interface Build {
  readonly label: string;
  /** dist/cli.js of that build; undefined = this checkout's. */
  readonly cli: string | undefined;
}

interface ScaleResult {
  build: string;
  instances: number;
  idleQueriesPerSecondPerInstance: number;
  idleMariadbCpu: number;
  sameP50Ms: number;
  sameP99Ms: number;
  crossP50Ms: number;
  crossP99Ms: number;
  crossMaxMs: number;
  /** Cross-instance latency from the POST's answer (the event acknowledged) to the receipt. */
  crossAckP50Ms: number;
  crossAckP99Ms: number;
  loadQueriesPerSecond: number;
  loadMariadbCpu: number;
  serversCpu: number;
  benchCpu: number;
  postP50Ms: number;
  sent: number;
  delivered: number;
  expected: number;
}

/**
 * `npm run bench -- scale`: N server processes on one MariaDB (1, 3 and 10 by default), one SSE
 * stream on each, and one publisher POSTing single events at --rate to the first instance, so the
 * others write nothing and learn of each event from the store alone. Every event goes to every
 * stream; the latency from the POST's send (and, across instances, from its answer) to each
 * stream's receipt is split into same-instance (the first) and cross-instance (the others). Before the
 * load, an idle phase with the streams open gives the queries per second each instance costs
 * while nothing happens; MariaDB's CPU is read from /proc in both phases. The same runs are made
 * against the build before the feed watched the sequence row (--baseline REV, default
 * PRE_WATCH_REVISION; --no-baseline skips it), side by side.
 */
export async function runScale(args: readonly string[]): Promise<void> {
  checkArguments(
    "scale",
    args,
    ["--instances", "--duration", "--rate", "--idle", "--baseline"],
    ["--no-baseline"],
  );
  const instances = parseList(textOption(args, "--instances")) ?? DEFAULT_INSTANCES;
  const seconds = parseDuration(args, DEFAULT_SECONDS);
  const idleSeconds = parseCountOption(args, "--idle", DEFAULT_IDLE_SECONDS, 1);
  const rate = parseCountOption(args, "--rate", DEFAULT_RATE, 1);
  const baselineRevision = args.includes("--no-baseline")
    ? undefined
    : (textOption(args, "--baseline") ?? PRE_WATCH_REVISION);
  const cleanup = new Cleanup();
  const removeSignalHandlers = cleanup.onSignals();
  try {
    const builds: Build[] = [{ label: "this checkout", cli: undefined }];
    if (baselineRevision !== undefined) {
      const work = await mkdtemp(path.join(os.tmpdir(), "eventsdb-bench-scale-"));
      cleanup.add("remove the bench dir", () => rm(work, { recursive: true, force: true }));
      builds.push({
        label: `before (${baselineRevision.slice(0, 7)})`,
        cli: await checkoutBuild(baselineRevision, path.join(work, "baseline"), cleanup),
      });
    }
    const { mariadb, admin, mariadbVersion } = await startBenchDatabase(cleanup);
    const ticks = await clockTicksPerSecond();
    const questions = async (): Promise<number> => {
      const [rows] = await admin.query<RowDataPacket[]>("SHOW GLOBAL STATUS LIKE 'Questions'");
      return Number(rows[0]?.Value ?? 0);
    };
    const results: ScaleResult[] = [];
    let database = 0;
    for (const count of instances) {
      for (const build of builds) {
        const name = `scale_${++database}`;
        await admin.query(`CREATE DATABASE \`${name}\``);
        const url = mariadb.url.replace(/\/[^/]*$/, `/${name}`);
        process.stderr.write(`bench: ${build.label}, ${count} instance(s)\n`);
        results.push(
          await runInstances(build, count, url, {
            seconds,
            idleSeconds,
            rate,
            ticks,
            questions,
            mariadbPid: mariadb.pid,
          }),
        );
      }
    }
    const machine = machineInfo();
    process.stdout.write(
      `\nscale: ${rate} events/s for ${seconds} s POSTed to the first of N instances on one MariaDB ` +
        `${mariadbVersion}; one SSE stream per instance; ${machine.cpus} CPUs (${machine.cpuModel})\n\n`,
    );
    process.stdout.write(
      formatTable(
        [
          "build",
          "instances",
          "idle q/s per instance",
          "idle MariaDB CPU",
          "same p50 / p99 ms",
          "cross p50 / p99 / max ms",
          "cross from ack p50 / p99",
          "load q/s",
          "load MariaDB CPU",
          "servers CPU",
          "bench CPU",
          "delivered",
        ],
        results.map((r) => [
          r.build,
          String(r.instances),
          r.idleQueriesPerSecondPerInstance.toFixed(1),
          `${(r.idleMariadbCpu * 100).toFixed(1)} %`,
          `${r.sameP50Ms.toFixed(1)} / ${r.sameP99Ms.toFixed(1)}`,
          r.instances > 1
            ? `${r.crossP50Ms.toFixed(1)} / ${r.crossP99Ms.toFixed(1)} / ${r.crossMaxMs.toFixed(0)}`
            : "-",
          r.instances > 1 ? `${r.crossAckP50Ms.toFixed(1)} / ${r.crossAckP99Ms.toFixed(1)}` : "-",
          r.loadQueriesPerSecond.toFixed(0),
          `${(r.loadMariadbCpu * 100).toFixed(1)} %`,
          `${(r.serversCpu * 100).toFixed(0)} %`,
          `${(r.benchCpu * 100).toFixed(0)} %`,
          `${r.delivered} / ${r.expected}`,
        ]),
      ),
    );
    process.stdout.write(
      "\nCPU in % of one core, over the phase. Latency from the POST's send (from ack: its answer) to the " +
        "stream's receipt; same = the stream on the instance that appended, cross = on the others, which " +
        "write nothing. Queries: MariaDB's Questions, all instances.\n",
    );
    const file = await writeResults("scale", {
      machine,
      mariadbVersion,
      rate,
      seconds,
      idleSeconds,
      results,
    });
    process.stdout.write(`results: ${file}\n`);
  } finally {
    await cleanup.run();
    removeSignalHandlers();
  }
}

interface RunOptions {
  readonly seconds: number;
  readonly idleSeconds: number;
  readonly rate: number;
  readonly ticks: number;
  readonly questions: () => Promise<number>;
  readonly mariadbPid: number;
}

async function runInstances(
  build: Build,
  count: number,
  url: string,
  options: RunOptions,
): Promise<ScaleResult> {
  const servers: ServerProcess[] = [];
  const clients: SseClients[] = [];
  try {
    // The first migrates the new database; the others find it migrated.
    servers.push(await startServerChild(serverEnv(url), [], build.cli));
    servers.push(
      ...(await Promise.all(
        Array.from({ length: count - 1 }, () => startServerChild(serverEnv(url), [], build.cli)),
      )),
    );
    const same: number[] = [];
    const cross: number[] = [];
    /** Cross-instance receipts: event id and time, matched with the POST answers afterwards. */
    const crossReceipts: { id: number; at: number }[] = [];
    let delivered = 0;
    for (const [index, server] of servers.entries()) {
      const sse = new SseClients(server.url);
      clients.push(sse);
      await sse.open(`/events/stream?subject=${SUBJECT}`, {
        timeoutMs: 10_000,
        onEvent: (id, data, receivedAt) => {
          const sentAt = parseSentAt(data);
          if (sentAt === undefined) return;
          delivered++;
          if (index === 0) same.push(receivedAt - sentAt);
          else {
            cross.push(receivedAt - sentAt);
            crossReceipts.push({ id, at: receivedAt });
          }
        },
      });
    }
    const pids = Object.fromEntries(servers.map((s, i) => [`server${i}`, s.pid]));
    const meter = (): CpuMeter => new CpuMeter({ mariadb: options.mariadbPid, ...pids }, options.ticks);

    // Idle: streams open, nothing appended.
    await sleep(1000);
    const idleMeter = meter();
    await idleMeter.start();
    const idleQ0 = await options.questions();
    await sleep(options.idleSeconds * 1000);
    const idleQueries = (await options.questions()) - idleQ0 - 1;
    const idleCpu = await idleMeter.stop();

    // Load: one publisher, on the first instance.
    const loadMeter = meter();
    await loadMeter.start();
    const loadQ0 = await options.questions();
    const started = performance.now();
    const publishing = await publish((servers[0] as ServerProcess).url, options.rate, options.seconds);
    const loadSeconds = (performance.now() - started) / 1000;
    const loadQueries = (await options.questions()) - loadQ0 - 1;
    const loadCpu = await loadMeter.stop();
    const { sent } = publishing;
    const expected = sent * count;
    const deadline = performance.now() + DRAIN_MS;
    while (delivered < expected && performance.now() < deadline) await sleep(50);
    const crossAck = crossReceipts.flatMap(({ id, at }) => {
      const answered = publishing.answeredAt.get(id);
      return answered === undefined ? [] : [at - answered];
    });
    const serversCpu = servers.reduce((sum, _s, i) => sum + (loadCpu[`server${i}`] ?? 0), 0);
    return {
      build: build.label,
      instances: count,
      idleQueriesPerSecondPerInstance: idleQueries / options.idleSeconds / count,
      idleMariadbCpu: idleCpu.mariadb ?? 0,
      sameP50Ms: percentile(same, 50),
      sameP99Ms: percentile(same, 99),
      crossP50Ms: percentile(cross, 50),
      crossP99Ms: percentile(cross, 99),
      crossMaxMs: percentile(cross, 100),
      crossAckP50Ms: percentile(crossAck, 50),
      crossAckP99Ms: percentile(crossAck, 99),
      loadQueriesPerSecond: loadQueries / loadSeconds,
      loadMariadbCpu: loadCpu.mariadb ?? 0,
      serversCpu,
      benchCpu: loadCpu.bench ?? 0,
      postP50Ms: percentile(publishing.postMs, 50),
      sent,
      delivered,
      expected,
    };
  } finally {
    for (const sse of clients) sse.closeAll();
    await Promise.all(servers.map((s) => s.stop()));
  }
}

/**
 * POSTs single events to one instance at `rate`/s for `seconds`, open loop, each stamped with its
 * send time; returns how many were stored, each POST's time and when each event id was answered.
 */
async function publish(
  baseUrl: string,
  rate: number,
  seconds: number,
): Promise<{ sent: number; postMs: number[]; answeredAt: Map<number, number> }> {
  const target = new URL(baseUrl);
  const agent = new Agent({ keepAlive: true });
  const interval = 1000 / rate;
  const total = Math.max(1, Math.round(rate * seconds));
  const postMs: number[] = [];
  const answeredAt = new Map<number, number>();
  const inFlight = new Set<Promise<void>>();
  let sent = 0;
  const started = performance.now();
  try {
    for (let k = 0; k < total; k++) {
      const wait = started + k * interval - performance.now();
      if (wait > 0) await sleep(wait);
      const sentAt = nowMs();
      const body = JSON.stringify({
        source: "bench",
        type: "scale",
        subject: SUBJECT,
        data: Buffer.from(JSON.stringify({ sentAt })).toString("base64"),
      });
      const t0 = performance.now();
      const posting: Promise<void> = postEvent(target, agent, body)
        .then(({ status, body }) => {
          const at = nowMs();
          const id = status === 200 ? (JSON.parse(body) as { id?: unknown }).id : undefined;
          if (typeof id !== "number") return;
          sent++;
          postMs.push(performance.now() - t0);
          answeredAt.set(id, at);
        })
        .catch(() => {})
        .finally(() => inFlight.delete(posting));
      inFlight.add(posting);
    }
    await Promise.all(inFlight);
  } finally {
    agent.destroy();
  }
  return { sent, postMs, answeredAt };
}

/** The publisher's send time in a simple-JSON frame on SUBJECT, else undefined. */
function parseSentAt(data: string): number | undefined {
  try {
    const event = JSON.parse(data) as { subject?: unknown; data?: unknown };
    if (event.subject !== SUBJECT || typeof event.data !== "string") return undefined;
    const stamp = JSON.parse(Buffer.from(event.data, "base64").toString("utf8")) as { sentAt?: unknown };
    return typeof stamp.sentAt === "number" ? stamp.sentAt : undefined;
  } catch {
    return undefined;
  }
}

function parseList(text: string | undefined): number[] | undefined {
  if (text === undefined) return undefined;
  const values = text.split(",").map((v) => Number(v.trim()));
  if (values.some((v) => !Number.isSafeInteger(v) || v < 1 || v > 50)) {
    throw new Error("--instances is a comma-separated list of counts from 1 to 50, e.g. 1,3,10");
  }
  return values;
}
