import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "../src/config.js";
import { EventLog } from "../src/events/event-log.js";
import { Metrics } from "../src/metrics.js";
import { SubscriptionStore } from "../src/subscriptions/store.js";
import { subscriptionSpec } from "../test/subscriptions/sinks.js";
import { openStream } from "../test/support/sse.js";
import {
  buildDist,
  Cleanup,
  checkArguments,
  formatRate,
  formatTable,
  machineInfo,
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

/** Events delivered to the one fast sink (per window). */
const DEFAULT_EVENTS = 5000;
/** Sinks of the fan-out run, and events each of them receives. */
const DEFAULT_SINKS = 100;
const FAN_EVENTS = 300;
/** The steady rate of the lag run, events per second, and its length. */
const LAG_RATE = 500;
const DEFAULT_LAG_SECONDS = 10;
/** Events per append request while preloading. */
const PRELOAD_BATCH = 500;
/** The longest a run waits for its deliveries. */
const RUN_TIMEOUT_MS = 300_000;

/** Wall clock in ms with sub-ms precision, comparable between the publisher and the receivers (one process). */
function now(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * `npm run bench -- webhooks`: push delivery to web hooks, next to SSE in the same run. Against one
 * server process: deliveries per second to one fast local sink (window 1, and window 16) and to
 * 100 sinks (one subscription each); then the delivery lag (sent → the sink has it) at a steady
 * 500 events/s, p50/p99, for a subscription with window 1, then one with window 16, each beside an
 * SSE stream of the same events measured alike.
 */
export async function runWebhooks(args: readonly string[]): Promise<void> {
  checkArguments("webhooks", args, ["--events", "--sinks", "--duration", "--store"], []);
  const events = parseCountOption(args, "--events", DEFAULT_EVENTS, 1);
  const sinkCount = parseCountOption(args, "--sinks", DEFAULT_SINKS, 1);
  const lagSeconds = parseDuration(args, DEFAULT_LAG_SECONDS);
  const storeKind = textOption(args, "--store") ?? "mysql";
  if (storeKind !== "mysql" && storeKind !== "sqlite") throw new Error("--store is mysql or sqlite");
  const cleanup = new Cleanup();
  const removeSignalHandlers = cleanup.onSignals();
  try {
    const work = await mkdtemp(path.join(os.tmpdir(), "eventsdb-bench-webhooks-"));
    cleanup.add("remove the bench dir", () => rm(work, { recursive: true, force: true }));
    let databaseUrl: string;
    let label: string;
    if (storeKind === "mysql") {
      const { mariadb, admin, mariadbVersion } = await startBenchDatabase(cleanup);
      await admin.query("CREATE DATABASE webhooks");
      databaseUrl = mariadb.url.replace(/\/[^/]*$/, "/webhooks");
      label = `MariaDB ${mariadbVersion}`;
    } else {
      process.stderr.write("bench: building dist/ (tsc -p tsconfig.build.json)\n");
      await buildDist();
      databaseUrl = `sqlite:${path.join(work, "webhooks.db")}`;
      label = "SQLite";
    }

    const sinks = new Sinks();
    await sinks.listen();
    cleanup.add("close the sinks", () => sinks.close());
    const server = await startServerChild(serverEnv(databaseUrl), [
      "--webhook-allow-private",
      "true",
      "--subscription-lease-seconds",
      "3",
    ]);
    cleanup.add("stop the server", () => server.stop());
    // The bench's own view of the store: it creates the subscriptions as the API would.
    const eventLog = await EventLog.open(
      loadConfig({}, { "database-url": databaseUrl }),
      new Metrics({ defaultMetrics: false }),
    );
    cleanup.add("close the bench's store", () => eventLog.close());
    const store = new SubscriptionStore(eventLog.dialect);
    let subscriptions = 0;
    const subscribe = async (sink: string, position: number, window = 1) => {
      const id = `bench-${subscriptions++}`;
      await store.create({
        id,
        spec: subscriptionSpec(sink, {
          config: { subject: undefined, recursive: false, type: undefined, window },
        }),
        owner: "anonymous",
        ownerScopes: ["*"],
        position,
      });
      return id;
    };
    const lastId = () => eventLog.repository.lastId();

    const throughput = async (name: string, count: number, perSink: number, window: number) => {
      const from = await lastId();
      process.stderr.write(`bench: ${name}: preloading ${formatRate(perSink)} events\n`);
      await preload(server.url, perSink);
      const paths = Array.from({ length: count }, (_, i) => `/${name.replace(/\W+/g, "-")}/${i}`);
      for (const p of paths) sinks.expect(p, perSink);
      for (const p of paths) await subscribe(`${sinks.url}${p}`, from, window);
      await sinks.allDone(paths, RUN_TIMEOUT_MS);
      // From the first delivery to the last: the claim (up to lease/3) and the handshake are not counted.
      const first = Math.min(...paths.map((p) => sinks.firstAt(p)));
      const seconds = (Math.max(...paths.map((p) => sinks.lastAt(p))) - first) / 1000;
      const deliveries = count * perSink;
      process.stderr.write(`bench: ${name}: ${formatRate(deliveries / seconds)} deliveries/s\n`);
      // Out of the way of the next run.
      for (const record of await store.list()) await store.delete(record.id);
      return { name, sinks: count, window, deliveries, seconds, perSecond: deliveries / seconds };
    };

    const one = await throughput("1 sink, window 1", 1, events, 1);
    const oneWide = await throughput("1 sink, window 16", 1, events, 16);
    const fan = await throughput(`${sinkCount} sinks, window 1`, sinkCount, FAN_EVENTS, 1);

    // The lag runs, one per window, each with one subscription and one SSE stream from the
    // current end: run one after the other, so neither competes with the other for the CPU.
    const total = Math.round(LAG_RATE * lagSeconds);
    const lagRun = async (window: number) => {
      process.stderr.write(`bench: lag at ${LAG_RATE} events/s for ${lagSeconds} s, window ${window}\n`);
      const from = await lastId();
      const lagPath = `/lag-window-${window}`;
      sinks.expect(lagPath, total);
      await subscribe(`${sinks.url}${lagPath}`, from, window);
      // Let the server claim it (lease/3) and shake hands before the clock starts.
      await sinks.handshaken(lagPath, 10_000);
      const sse = await openStream(`${server.url}/events/stream?from_id=${from}`);
      const sseLags: number[] = [];
      const sseDone = (async () => {
        for (;;) {
          while (sse.parser.events.length > 0) {
            const event = sse.parser.events.shift();
            const data = JSON.parse(
              Buffer.from(JSON.parse(event?.data ?? "{}").data, "base64").toString(),
            ) as { t: number };
            sseLags.push(now() - data.t);
          }
          if (sseLags.length >= total) return;
          await sleep(5);
        }
      })();
      await publishSteadily(server.url, total, LAG_RATE);
      await Promise.race([
        Promise.all([sinks.allDone([lagPath], RUN_TIMEOUT_MS), sseDone]),
        sleep(RUN_TIMEOUT_MS).then(() => {
          throw new Error("the lag run did not finish");
        }),
      ]);
      sse.close();
      for (const record of await store.list()) await store.delete(record.id);
      const hookLags = sinks.lags(lagPath);
      return {
        window,
        webhook: { p50: percentile(hookLags, 50), p99: percentile(hookLags, 99), max: Math.max(...hookLags) },
        sse: { p50: percentile(sseLags, 50), p99: percentile(sseLags, 99), max: Math.max(...sseLags) },
      };
    };
    const lags = [await lagRun(1), await lagRun(16)];
    const lag = { rate: LAG_RATE, seconds: lagSeconds, events: total, runs: lags };

    const ms = (value: number) => `${value.toFixed(1)} ms`;
    process.stdout.write(
      `\nwebhooks on ${label}, ${os.cpus().length} CPUs (${new Date().toISOString()})\n\n${formatTable(
        ["run", "deliveries", "seconds", "deliveries/s"],
        [one, oneWide, fan].map((r) => [
          r.name,
          formatRate(r.deliveries),
          r.seconds.toFixed(2),
          formatRate(r.perSecond),
        ]),
      )}\n\n${formatTable(
        [`lag at ${LAG_RATE} events/s (${formatRate(total)} events)`, "p50", "p99", "max"],
        lags.flatMap((r) => [
          [
            `web hook, window ${r.window} (sent → sink has it)`,
            ms(r.webhook.p50),
            ms(r.webhook.p99),
            ms(r.webhook.max),
          ],
          [`SSE, same run (sent → client has it)`, ms(r.sse.p50), ms(r.sse.p99), ms(r.sse.max)],
        ]),
      )}\n`,
    );
    const file = await writeResults("webhooks", {
      machine: machineInfo(),
      store: label,
      throughput: [one, oneWide, fan],
      lag,
    });
    process.stdout.write(`results: ${path.relative(ROOT, file)}\n`);
  } finally {
    await cleanup.run();
    removeSignalHandlers();
  }
}

function cloudEvent(t: number, n: number): Record<string, unknown> {
  return {
    specversion: "1.0",
    id: `b-${n}-${Math.random().toString(36).slice(2)}`,
    source: "bench",
    type: "bench.tick",
    subject: "bench/1",
    datacontenttype: "application/json",
    data: { t },
  };
}

async function append(url: string, batch: Record<string, unknown>[]): Promise<void> {
  const response = await fetch(`${url}/events`, {
    method: "POST",
    headers: { "content-type": "application/cloudevents-batch+json" },
    body: JSON.stringify(batch),
  });
  if (!response.ok) throw new Error(`append: HTTP ${response.status} ${await response.text()}`);
}

async function preload(url: string, count: number): Promise<void> {
  for (let sent = 0; sent < count; sent += PRELOAD_BATCH) {
    const size = Math.min(PRELOAD_BATCH, count - sent);
    await append(
      url,
      Array.from({ length: size }, (_, i) => cloudEvent(now(), sent + i)),
    );
  }
}

/** `total` events at `rate` per second: a batch every 10 ms, each event stamped as it is sent. */
async function publishSteadily(url: string, total: number, rate: number): Promise<void> {
  const tickMs = 10;
  const perTick = (rate * tickMs) / 1000;
  const started = performance.now();
  let sent = 0;
  const inFlight: Promise<void>[] = [];
  for (let tick = 0; sent < total; tick++) {
    const due = Math.min(total, Math.round((tick + 1) * perTick));
    const batch = Array.from({ length: due - sent }, (_, i) => cloudEvent(now(), sent + i));
    sent = due;
    inFlight.push(append(url, batch));
    const next = started + (tick + 1) * tickMs;
    await sleep(Math.max(0, next - performance.now()));
  }
  await Promise.all(inFlight);
}

/** The bench's web hook sinks: one HTTP server, a sink per path; consents to every handshake. */
class Sinks {
  readonly #server = http.createServer((req, res) => this.#handle(req, res));
  readonly #state = new Map<
    string,
    {
      expected: number;
      seen: Set<string>;
      lags: number[];
      firstAt: number;
      lastAt: number;
      handshaken: boolean;
    }
  >();
  readonly #waiters = new Set<() => void>();
  url = "";

  async listen(): Promise<void> {
    // Keep-alive connections of the server's agent: no per-request timeout games.
    this.#server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  expect(path: string, count: number): void {
    this.#state.set(path, {
      expected: count,
      seen: new Set(),
      lags: [],
      firstAt: 0,
      lastAt: 0,
      handshaken: false,
    });
  }

  firstAt(path: string): number {
    return this.#state.get(path)?.firstAt ?? 0;
  }

  lastAt(path: string): number {
    return this.#state.get(path)?.lastAt ?? 0;
  }

  lags(path: string): number[] {
    return this.#state.get(path)?.lags ?? [];
  }

  allDone(paths: readonly string[], timeoutMs: number): Promise<void> {
    return this.#until(
      () =>
        paths.every((p) => {
          const s = this.#state.get(p);
          return s !== undefined && s.seen.size >= s.expected;
        }),
      timeoutMs,
      "deliveries",
    );
  }

  handshaken(path: string, timeoutMs: number): Promise<void> {
    return this.#until(() => this.#state.get(path)?.handshaken === true, timeoutMs, "handshake");
  }

  #until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`bench: timed out waiting for ${what}`));
      }, timeoutMs);
      const waiter = () => {
        if (!check()) return;
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        resolve();
      };
      this.#waiters.add(waiter);
      waiter();
    });
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const state = this.#state.get(req.url ?? "");
    if (req.method === "OPTIONS") {
      if (state !== undefined) state.handshaken = true;
      res.writeHead(200, { "WebHook-Allowed-Origin": "*", "WebHook-Allowed-Rate": "*" }).end();
      for (const waiter of [...this.#waiters]) waiter();
      return;
    }
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const at = now();
      res.writeHead(204).end();
      if (state === undefined) return;
      const event = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { id: string; data: { t: number } };
      if (!state.seen.has(event.id)) {
        state.seen.add(event.id);
        state.lags.push(at - event.data.t);
      }
      if (state.firstAt === 0) state.firstAt = at;
      state.lastAt = at;
      for (const waiter of [...this.#waiters]) waiter();
    });
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}
