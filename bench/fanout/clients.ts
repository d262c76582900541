import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { SseClients, type SseStream } from "../sse-clients.js";
import { FAN_SUBJECT, LOOP_RESOLUTION_MS } from "./settings.js";
import { openStreams } from "./streams.js";

// The fan-out bench's SSE clients: one group per process (the bench process itself with
// --client-processes 0, else one per child process, see client-process.ts). Each group checks
// completeness and order per client and measures its own process's CPU and event-loop delay, so
// that a busy client is told apart from a slow server.

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

/** The event-loop delay of a process beyond the sampling interval, in ms. */
export interface LoopDelay {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface GroupOpened {
  opened: number;
  failures: number;
  failureReasons: Record<string, number>;
  seconds: number;
}

/** What a group counts of its clients' receipts; the run adds them up over the groups. */
export const GROUP_COUNTS = [
  "lost",
  "clientsMissingEvents",
  "duplicates",
  "outOfOrder",
  "unexpected",
  "badFrames",
  "streamsEndedEarly",
] as const;
export type GroupCounts = Record<(typeof GROUP_COUNTS)[number], number>;

export interface GroupResult extends GroupCounts {
  /** Per first receipt: receive time − the event's sentAt (ms), and the event's slot (id − base − 1). */
  latencies: Float64Array;
  slots: Int32Array;
  /** CPU time of this process over the measured window, as a fraction of one core. */
  cpu: number;
  loop: LoopDelay;
}

export interface GroupConfig {
  baseUrl: string;
  /** Streams this group opens. */
  count: number;
  /** Ids above it belong to the run. */
  base: number;
  /** Slots per client (ids base+1 … base+capacity). */
  capacity: number;
  /** Most first receipts kept for latency (the published events × count). */
  maxLatencies: number;
}

/** A monitorEventLoopDelay histogram's figures beyond the sampling interval. */
export function loopDelay(histogram: { percentile(p: number): number; max: number }): LoopDelay {
  const beyond = (ns: number) => (Number.isFinite(ns) ? Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS) : 0);
  return {
    p50Ms: beyond(histogram.percentile(50)),
    p99Ms: beyond(histogram.percentile(99)),
    maxMs: beyond(histogram.max),
  };
}

/** One process's share of the fan-out clients. */
export class ClientGroup {
  readonly #config: GroupConfig;
  readonly #clients: FanClient[];
  readonly #sse: SseClients;
  /** Per slot: its data text as first received (others must match). */
  readonly #data: (string | undefined)[];
  /** Per slot: its sentAt once parsed. */
  readonly #sentAt: Float64Array;
  readonly #latencies: Float64Array;
  readonly #slots: Int32Array;
  #latencyCount = 0;
  #byIndex: (SseStream | undefined)[] = [];
  #streams: SseStream[] = [];
  firstReceipts = 0;
  badFrames = 0;
  readonly #loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  #cpuStart = process.cpuUsage();
  #wallStart = 0;
  #cpu = 0;

  constructor(config: GroupConfig) {
    this.#config = config;
    this.#clients = Array.from({ length: config.count }, () => new FanClient(config.capacity));
    this.#sse = new SseClients(config.baseUrl);
    this.#data = new Array(config.capacity);
    this.#sentAt = new Float64Array(config.capacity).fill(Number.NaN);
    this.#latencies = new Float64Array(config.maxLatencies);
    this.#slots = new Int32Array(config.maxLatencies);
  }

  async open(): Promise<GroupOpened> {
    const path = `/events/stream?subject=${encodeURIComponent(FAN_SUBJECT)}`;
    const connect = await openStreams(
      this.#sse,
      this.#config.count,
      () => path,
      (i) => this.#handler(i),
    );
    this.#byIndex = connect.byIndex;
    this.#streams = connect.opened;
    return {
      opened: connect.opened.length,
      failures: connect.failures,
      failureReasons: connect.failureReasons,
      seconds: connect.seconds,
    };
  }

  /** Starts measuring this process's CPU time and event-loop delay. */
  start(): void {
    this.#loop.reset();
    this.#loop.enable();
    this.#cpuStart = process.cpuUsage();
    this.#wallStart = performance.now();
  }

  stop(): void {
    const wall = (performance.now() - this.#wallStart) / 1000;
    const used = process.cpuUsage(this.#cpuStart);
    this.#cpu = wall > 0 ? (used.user + used.system) / 1e6 / wall : 0;
    this.#loop.disable();
  }

  /** Completeness over the acknowledged ids, per client that opened; latencies; CPU and delay. */
  result(ids: readonly number[]): GroupResult {
    let lost = 0;
    let clientsMissingEvents = 0;
    let duplicates = 0;
    let outOfOrder = 0;
    let unexpected = 0;
    this.#clients.forEach((client, index) => {
      duplicates += client.duplicates;
      outOfOrder += client.outOfOrder;
      unexpected += client.unexpected;
      if (this.#byIndex[index] === undefined) return; // never opened: counted as a failed stream
      let missing = 0;
      for (const id of ids) if (client.seen[id - this.#config.base - 1] === 0) missing++;
      lost += missing;
      if (missing > 0) clientsMissingEvents++;
    });
    return {
      latencies: this.#latencies.slice(0, this.#latencyCount),
      slots: this.#slots.slice(0, this.#latencyCount),
      lost,
      clientsMissingEvents,
      duplicates,
      outOfOrder,
      unexpected,
      badFrames: this.badFrames,
      streamsEndedEarly: this.#streams.filter((stream) => stream.ended !== undefined).length,
      cpu: this.#cpu,
      loop: loopDelay(this.#loop),
    };
  }

  close(): void {
    this.#sse.closeAll();
  }

  #handler(index: number): (id: number, data: string, receivedAtMs: number) => void {
    const client = this.#clients[index] as FanClient;
    return (id, data, receivedAtMs) => this.#onEvent(client, id, data, receivedAtMs);
  }

  #onEvent(client: FanClient, id: number, data: string, receivedAtMs: number): void {
    const slot = id - this.#config.base - 1;
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.#config.capacity) {
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

    const known = this.#data[slot];
    if (known === undefined) {
      const sentAt = parseSentAt(id, data);
      if (sentAt === undefined) {
        this.badFrames++;
        return;
      }
      this.#data[slot] = data;
      this.#sentAt[slot] = sentAt;
    } else if (known !== data) {
      // Every client must get the same bytes; the first copy was parsed and checked.
      this.badFrames++;
      return;
    }
    if (this.#latencyCount < this.#latencies.length) {
      this.#latencies[this.#latencyCount] = receivedAtMs - (this.#sentAt[slot] as number);
      this.#slots[this.#latencyCount] = slot;
      this.#latencyCount++;
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
