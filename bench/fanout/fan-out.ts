import { Agent } from "node:http";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import type { Connection, RowDataPacket } from "mysql2/promise";
import type { ServerProcess } from "../../test/support/process.js";
import { nowMs, SseClients } from "../sse-clients.js";
import { type Cleanup, CpuMeter, postEvent, RssSampler, rssKb, sleep } from "../support.js";
import {
  assertAlive,
  type HeapMetrics,
  heapMetrics,
  type StreamMetrics,
  streamMetrics,
  waitForStreams,
} from "./server.js";
import {
  DELIVERY_GRACE_MS,
  FAN_SUBJECT,
  LOOP_RESOLUTION_MS,
  PUBLISH_EVENTS,
  PUBLISH_RATE,
  PUBLISHERS,
  SETTLE_MS,
} from "./settings.js";
import { openStreams } from "./streams.js";

// 1. Fan-out: clients on one subject while events are published at a fixed rate; latency and
// completeness per client.

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
export async function publish(baseUrl: string): Promise<PublishResult> {
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
      const response = await postEvent(url, agent, body);
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

/** Nearest-rank percentile of an ascending array. */
function nearestRank(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

export interface FanResult {
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

export async function fanOut(
  server: ServerProcess,
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

  const clients = new SseClients(server.url);
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
  const published = await publish(server.url);
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
