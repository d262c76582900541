import { Agent, request } from "node:http";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import type { Connection, RowDataPacket } from "mysql2/promise";
import type { ServerProcess } from "../../test/support/process.js";
import { nowMs } from "../sse-clients.js";
import { type Cleanup, CpuMeter, RssSampler, rssKb, sleep } from "../support.js";
import {
  GROUP_COUNTS,
  type GroupCounts,
  type GroupOpened,
  type GroupResult,
  type LoopDelay,
  loopDelay,
} from "./clients.js";
import { type ClientHost, childHost, localHost } from "./hosts.js";
import {
  assertAlive,
  type HeapMetrics,
  heapMetrics,
  type ServerView,
  type StreamMetrics,
  scrapeBefore,
  serverView,
  streamMetrics,
  waitForStreams,
} from "./server.js";
import {
  CLIENT_BUSY_CPU,
  CLIENT_BUSY_LOOP_P99_MS,
  DELIVERY_GRACE_MS,
  FAN_SUBJECT,
  LOOP_RESOLUTION_MS,
  PUBLISH_EVENTS,
  PUBLISH_RATE,
  PUBLISHERS,
  SETTLE_MS,
} from "./settings.js";

// 1. Fan-out: clients on one subject while events are published at a fixed rate; latency and
// completeness per client (ClientGroup, in this process or in client processes of their own).

interface PublishResult {
  ids: number[];
  /** Per acknowledged id: when it was sent and when its answer arrived (nowMs). */
  answered: Map<number, { sentAt: number; answeredAt: number }>;
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
  /** POSTs on a connection opened for them, and their p50 / p99 (ms); the TCP connect's p99. */
  newConnections: { count: number; postP50Ms: number; postP99Ms: number; connectP99Ms: number };
  /** POSTs on a kept-alive connection: p50 / p99 (ms). */
  reusedConnections: { count: number; postP50Ms: number; postP99Ms: number };
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
  const answered = new Map<number, { sentAt: number; answeredAt: number }>();
  const postLatencies: number[] = [];
  const onNew: number[] = [];
  const onReused: number[] = [];
  const connects: number[] = [];
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
      const response = await post(url, agent, body, (ms) => connects.push(ms));
      const answeredAt = nowMs();
      const took = performance.now() - t0;
      postLatencies.push(took);
      (response.reused ? onReused : onNew).push(took);
      const parsed = response.status === 200 ? (JSON.parse(response.body) as { id?: unknown }) : {};
      if (typeof parsed.id === "number") {
        ids.push(parsed.id);
        answered.set(parsed.id, { sentAt, answeredAt });
      } else {
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
    answered,
    failed,
    failureReasons,
    sendSeconds,
    // PUBLISH_EVENTS − 1 intervals between the first and the last send.
    offeredRate: sendSeconds > 0 ? (PUBLISH_EVENTS - 1) / sendSeconds : Number.NaN,
    lateSends,
    maxInFlight,
    postP50Ms: nearestRank(sorted, 50),
    postP99Ms: nearestRank(sorted, 99),
    newConnections: {
      count: onNew.length,
      postP50Ms: nearestRank(Float64Array.from(onNew).sort(), 50),
      postP99Ms: nearestRank(Float64Array.from(onNew).sort(), 99),
      connectP99Ms: nearestRank(Float64Array.from(connects).sort(), 99),
    },
    reusedConnections: {
      count: onReused.length,
      postP50Ms: nearestRank(Float64Array.from(onReused).sort(), 50),
      postP99Ms: nearestRank(Float64Array.from(onReused).sort(), 99),
    },
    postMaxMs: sorted.length === 0 ? Number.NaN : (sorted[sorted.length - 1] as number),
    lastPostAt,
  };
}

/**
 * POST /events of one JSON body on `agent` (keep-alive), bounded by 30 s: the status, the answer's
 * text and whether the connection was kept alive from an earlier POST; `onConnect` gets the TCP
 * connect time of a connection opened for it (a dropped SYN shows there as a second or more).
 */
function post(
  url: URL,
  agent: Agent,
  body: string,
  onConnect: (ms: number) => void,
): Promise<{ status: number; body: string; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: "/events",
        method: "POST",
        agent,
        headers: {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body),
          // When it left, for a trace in the server (BENCH_SERVER_NODE_ARGS="--import …").
          "x-bench-sent-at": String(nowMs()),
        },
        timeout: 30_000,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          text += chunk;
        });
        res.once("end", () => resolve({ status: res.statusCode ?? 0, body: text, reused: req.reusedSocket }));
        res.once("error", reject);
      },
    );
    req.once("socket", (socket) => {
      if (!req.reusedSocket && socket.connecting)
        socket.once("connect", () => onConnect(performance.now() - started));
    });
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

/** One client process's share and what it measured of itself over the publish run. */
export interface ClientProcessFigures {
  pid: number;
  streams: number;
  /** CPU time over the run as a fraction of one core (process.cpuUsage). */
  cpu: number;
  /** Event-loop delay beyond the 10 ms sampling interval (monitorEventLoopDelay). */
  loop: LoopDelay;
}

export interface FanResult {
  clients: number;
  /** 0 = the clients ran in the bench process beside the publishers. */
  clientProcesses: number;
  clientFigures: ClientProcessFigures[];
  /** Whether some client process was busy enough that its own delay is in the latency figures. */
  clientBusy: boolean;
  connect: { opened: number; failures: number; failureReasons: Record<string, number>; seconds: number };
  rssIdleKb: number;
  rssClientsKb: number;
  rssPeakKb: number;
  heap: { idle: HeapMetrics; clients: HeapMetrics; afterPublish: HeapMetrics };
  rssSamples: number;
  publish: Omit<PublishResult, "ids" | "answered" | "lastPostAt"> & { ok: number };
  latencyMs: { count: number; p50: number; p90: number; p99: number; p999: number; max: number; min: number };
  /** Receive − the moment the publisher had the POST's answer: the part after the commit. */
  afterAnswerMs: { p50: number; p99: number; max: number };
  completeness: GroupCounts & { expectedPerClient: number };
  deliveredAfterLastPostMs: number | undefined;
  /** server, mariadb, bench (the publishers' process, with the clients when clientProcesses is 0), system. */
  cpu: Record<string, number>;
  /** The publishers' process (this one). */
  benchLoopDelay: LoopDelay;
  server: ServerView;
  metricsAfter: StreamMetrics;
  activeStreamsAfterClose: number;
}

/** n split into k whole parts differing by at most one, larger first. */
function spread(n: number, k: number): number[] {
  return Array.from({ length: k }, (_, i) => Math.floor(n / k) + (i < n % k ? 1 : 0));
}

function sortedStats(sorted: Float64Array) {
  return {
    count: sorted.length,
    min: sorted.length === 0 ? Number.NaN : (sorted[0] as number),
    p50: nearestRank(sorted, 50),
    p90: nearestRank(sorted, 90),
    p99: nearestRank(sorted, 99),
    p999: nearestRank(sorted, 99.9),
    max: sorted.length === 0 ? Number.NaN : (sorted[sorted.length - 1] as number),
  };
}

export async function fanOut(
  server: ServerProcess,
  admin: Connection,
  count: number,
  clientProcesses: number,
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
  const capacity = PUBLISH_EVENTS * 4;

  const shares = clientProcesses === 0 ? [count] : spread(count, Math.min(clientProcesses, count));
  const hosts: ClientHost[] = [];
  cleanup.add("end the fan-out clients", async () => {
    await Promise.all(hosts.map((host) => host.exit()));
  });
  for (const share of shares) {
    const config = {
      baseUrl: server.url,
      count: share,
      base,
      capacity,
      maxLatencies: share * PUBLISH_EVENTS,
    };
    hosts.push(clientProcesses === 0 ? localHost(config) : await childHost(config));
  }
  process.stderr.write(
    `bench: opening ${count} streams on ${FAN_SUBJECT} ` +
      `${clientProcesses === 0 ? "in the bench process" : `from ${hosts.length} client processes`}\n`,
  );
  const openStarted = performance.now();
  // One process after the other: a thousand SYNs at once would overflow the server's accept
  // queue and wait for the kernel's SYN retry (1 s, 3 s, 7 s, ...).
  const opened: GroupOpened[] = [];
  for (const host of hosts) opened.push(await host.open());
  const connect = {
    opened: opened.reduce((sum, group) => sum + group.opened, 0),
    failures: opened.reduce((sum, group) => sum + group.failures, 0),
    failureReasons: Object.assign({}, ...opened.map((group) => group.failureReasons)) as Record<
      string,
      number
    >,
    seconds: (performance.now() - openStarted) / 1000,
  };
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
  const before = await scrapeBefore(server);
  const sampler = new RssSampler(server.pid);
  const cpu = new CpuMeter({ server: server.pid, mariadb: mariadbPid }, ticks);
  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  await Promise.all(hosts.map((host) => host.start()));
  await cpu.start();
  loop.enable();
  sampler.start();
  const published = await publish(server.url);
  const expected = connect.opened * published.ids.length;
  const deadline = performance.now() + DELIVERY_GRACE_MS;
  let received = 0;
  for (;;) {
    received = (await Promise.all(hosts.map((host) => host.receipts()))).reduce((a, b) => a + b, 0);
    if (received >= expected || performance.now() >= deadline) break;
    await sleep(20);
  }
  const deliveredAt = performance.now();
  const delivered = received >= expected;
  const rss = await sampler.stop();
  loop.disable();
  await Promise.all(hosts.map((host) => host.stop()));
  const cpuUse = await cpu.stop();
  assertAlive(server);
  const server_ = await serverView(server, before);
  const metricsAfter = await streamMetrics(server);
  const heapAfterPublish = await heapMetrics(server);

  const results: GroupResult[] = await Promise.all(hosts.map((host) => host.result(published.ids)));
  const sum = (pick: (result: GroupResult) => number) => results.reduce((total, r) => total + pick(r), 0);
  const all = new Float64Array(sum((r) => r.latencies.length));
  const afterAnswer = new Float64Array(all.length);
  let at = 0;
  let answeredCount = 0;
  for (const result of results) {
    all.set(result.latencies, at);
    at += result.latencies.length;
    result.latencies.forEach((latency, i) => {
      const times = published.answered.get(base + 1 + (result.slots[i] as number));
      if (times !== undefined) afterAnswer[answeredCount++] = latency - (times.answeredAt - times.sentAt);
    });
  }
  const latencyMs = sortedStats(all.sort());
  const afterSorted = sortedStats(afterAnswer.subarray(0, answeredCount).sort());
  const clientFigures = results.map((result, i) => ({
    pid: (hosts[i] as ClientHost).pid,
    streams: shares[i] as number,
    cpu: result.cpu,
    loop: result.loop,
  }));
  const clientBusy = clientFigures.some(
    (figures) => figures.cpu >= CLIENT_BUSY_CPU || figures.loop.p99Ms >= CLIENT_BUSY_LOOP_P99_MS,
  );

  process.stderr.write("bench: closing the fan-out streams\n");
  await Promise.all(hosts.map((host) => host.close()));
  const activeStreamsAfterClose = await waitForStreams(server, 0);
  await Promise.all(hosts.map((host) => host.exit()));
  const { ids, answered, lastPostAt, ...publishRest } = published;
  return {
    clients: count,
    clientProcesses,
    clientFigures,
    clientBusy,
    connect,
    rssIdleKb,
    rssClientsKb,
    rssPeakKb: rss.peakKb,
    heap: { idle: heapIdle, clients: heapClients, afterPublish: heapAfterPublish },
    rssSamples: rss.samples,
    publish: { ...publishRest, ok: ids.length },
    latencyMs,
    afterAnswerMs: { p50: afterSorted.p50, p99: afterSorted.p99, max: afterSorted.max },
    completeness: {
      expectedPerClient: ids.length,
      ...(Object.fromEntries(GROUP_COUNTS.map((count) => [count, sum((r) => r[count])])) as GroupCounts),
    },
    deliveredAfterLastPostMs: delivered ? Math.max(0, deliveredAt - lastPostAt) : undefined,
    cpu: cpuUse,
    benchLoopDelay: loopDelay(loop),
    server: server_,
    metricsAfter,
    activeStreamsAfterClose,
  };
}
