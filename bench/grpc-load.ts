/**
 * A gRPC load process for `npm run bench -- grpc` (started by bench/grpc.ts, never by hand):
 * closed-loop calls of CreateEvent or CreateEvents over its own HTTP/2 connections, for a fixed
 * time. Several of these processes share a run when one would saturate a core.
 *
 * argv[2] is a LoadConfig as JSON. Over IPC (advanced serialization): it sends `ready` once every
 * connection has answered one call, runs on `start`, sends `result`, and exits on `exit` (so that
 * the parent can still read its CPU time), or when the parent goes away (IPC disconnect).
 */
import { randomBytes } from "node:crypto";
import http2 from "node:http2";
import { performance } from "node:perf_hooks";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { status as GrpcStatus } from "@grpc/grpc-js";
import {
  CreateEventReplySchema,
  type CreateEventRequest,
  CreateEventRequestSchema,
  CreateEventsReplySchema,
  type CreateEventsRequest,
  CreateEventsRequestSchema,
} from "../src/gen/grpc/eventsdb_pb.js";
import { grpcFrame } from "../src/transports/grpc/fast-path.js";
import { connectPeer, GrpcJsClient, type ProtoCreateEventRequest } from "../test/support/grpc.js";

/**
 * connect: @connectrpc/connect-node createGrpcTransport, one Http2SessionManager per connection;
 * grpc-js: a channel of its own per connection; h2: a bare node:http2 session speaking gRPC's
 * framing by hand, the cheapest client there is (a reference for what the server does alone).
 */
export type LoadClient = "connect" | "grpc-js" | "h2";
export type LoadMethod = "CreateEvent" | "CreateEvents";

export interface LoadConfig {
  client: LoadClient;
  method: LoadMethod;
  /** The server's gRPC port on 127.0.0.1 (h2c, prior knowledge). */
  port: number;
  /** One entry per HTTP/2 connection this process opens: its closed-loop callers (concurrent streams). */
  streams: number[];
  /** Events per CreateEvents request. */
  batchEvents: number;
  dataBytes: number;
  subjects: number;
  durationMs: number;
  /** Distinguishes the processes of one run, so their subjects and data differ. */
  seed: number;
}

export interface LoadResult {
  /** Calls answered OK within the measured window. */
  calls: number;
  /** Events acknowledged within the window. */
  events: number;
  /** Every event acknowledged, warm-up calls and the tail after the window included. */
  acknowledged: number;
  errors: number;
  errorCodes: Record<string, number>;
  errorSamples: string[];
  seconds: number;
  /** Latency of every call answered OK within the window, ms. */
  latencies: Float64Array;
  /** Event-loop utilisation during the window (1 = the loop never idled). */
  eventLoopUtilization: number;
}

export type LoadMessage =
  | { type: "ready" }
  | { type: "result"; result: LoadResult }
  | { type: "failed"; message: string };

/** A connection's call: resolves with the number of events acknowledged. */
type Call = () => Promise<number>;

interface Connection {
  readonly call: Call;
  close(): void;
}

const DISTINCT_REQUESTS = 64;
const DISTINCT_BATCHES = 4;
const MAX_ERROR_SAMPLES = 5;

function eventFields(config: LoadConfig, k: number) {
  return {
    source: "bench-grpc",
    type: "bench.created",
    subject: `bench/${(config.seed * 31 + k) % config.subjects}`,
    data: randomBytes(config.dataBytes),
  };
}

function connectConnection(config: LoadConfig): Connection {
  const base = `http://127.0.0.1:${config.port}`;
  const peer = connectPeer("grpc (HTTP/2)", { url: base, grpcUrl: base });
  let k = 0;
  if (config.method === "CreateEvent") {
    const requests: CreateEventRequest[] = Array.from({ length: DISTINCT_REQUESTS }, (_, i) =>
      create(CreateEventRequestSchema, eventFields(config, i)),
    );
    return {
      call: async () => {
        await peer.client.createEvent(requests[k++ % requests.length] as CreateEventRequest);
        return 1;
      },
      close: () => peer.close(),
    };
  }
  const batches: CreateEventsRequest[] = Array.from({ length: DISTINCT_BATCHES }, (_, b) =>
    create(CreateEventsRequestSchema, {
      events: Array.from({ length: config.batchEvents }, (_, i) =>
        eventFields(config, b * config.batchEvents + i),
      ),
    }),
  );
  return {
    call: async () => {
      const reply = await peer.client.createEvents(batches[k++ % batches.length] as CreateEventsRequest);
      return reply.ids.length;
    },
    close: () => peer.close(),
  };
}

function grpcJsConnection(config: LoadConfig): Connection {
  // ownConnection: grpc-js would otherwise share one channel between clients of the same target.
  const client = new GrpcJsClient(config.port, true);
  let k = 0;
  if (config.method === "CreateEvent") {
    const requests: ProtoCreateEventRequest[] = Array.from({ length: DISTINCT_REQUESTS }, (_, i) =>
      eventFields(config, i),
    );
    return {
      call: async () => {
        await client.unary("CreateEvent", requests[k++ % requests.length] as ProtoCreateEventRequest);
        return 1;
      },
      close: () => client.close(),
    };
  }
  const batches: { events: ProtoCreateEventRequest[] }[] = Array.from(
    { length: DISTINCT_BATCHES },
    (_, b) => ({
      events: Array.from({ length: config.batchEvents }, (_, i) =>
        eventFields(config, b * config.batchEvents + i),
      ),
    }),
  );
  return {
    call: async () => {
      const reply = await client.unary(
        "CreateEvents",
        batches[k++ % batches.length] as {
          events: ProtoCreateEventRequest[];
        },
      );
      return reply.ids.length;
    },
    close: () => client.close(),
  };
}

/** A call that ended with a grpc-status other than OK (bare HTTP/2 client). */
class GrpcStatusError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** Unary gRPC by hand: one length-prefixed message out, one back, the status in the trailers. */
function h2Connection(config: LoadConfig): Connection {
  const session = http2.connect(`http://127.0.0.1:${config.port}`);
  // A broken session fails its streams; those errors are counted per call.
  session.on("error", () => {});
  const unary = config.method === "CreateEvent";
  const bodies = unary
    ? Array.from({ length: DISTINCT_REQUESTS }, (_, i) =>
        grpcFrame(
          toBinary(CreateEventRequestSchema, create(CreateEventRequestSchema, eventFields(config, i))),
        ),
      )
    : Array.from({ length: DISTINCT_BATCHES }, (_, b) =>
        grpcFrame(
          toBinary(
            CreateEventsRequestSchema,
            create(CreateEventsRequestSchema, {
              events: Array.from({ length: config.batchEvents }, (_, i) =>
                eventFields(config, b * config.batchEvents + i),
              ),
            }),
          ),
        ),
      );
  const headers = {
    ":method": "POST",
    ":path": `/grpc.EventsDB/${config.method}`,
    "content-type": "application/grpc",
    te: "trailers",
  };
  let k = 0;
  const call: Call = () =>
    new Promise((resolve, reject) => {
      const stream = session.request(headers);
      const chunks: Buffer[] = [];
      let status: string | undefined;
      let message = "";
      const take = (h: http2.IncomingHttpHeaders) => {
        if (h["grpc-status"] !== undefined) status = String(h["grpc-status"]);
        if (h["grpc-message"] !== undefined) message = decodeURIComponent(String(h["grpc-message"]));
      };
      stream.on("response", take);
      stream.on("trailers", take);
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("error", reject);
      stream.on("end", () => {
        if (status !== "0") {
          reject(new GrpcStatusError(Number(status ?? GrpcStatus.UNKNOWN), message || "no grpc-status"));
          return;
        }
        const body = Buffer.concat(chunks).subarray(5);
        if (unary) {
          fromBinary(CreateEventReplySchema, body);
          resolve(1);
        } else resolve(fromBinary(CreateEventsReplySchema, body).ids.length);
      });
      stream.end(bodies[k++ % bodies.length]);
    });
  return { call, close: () => session.destroy() };
}

/** The gRPC status name of a failed call (connect-node or grpc-js), else the error's name. */
function errorCode(error: unknown): string {
  if (error instanceof ConnectError) return Code[error.code] ?? String(error.code);
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "number") return GrpcStatus[code] ?? String(code);
  return error instanceof Error ? error.name : "unknown";
}

class Stats {
  calls = 0;
  events = 0;
  acknowledged = 0;
  errors = 0;
  readonly errorCodes: Record<string, number> = {};
  readonly errorSamples: string[] = [];
  readonly latencies: number[] = [];

  fail(error: unknown): void {
    this.errors++;
    const code = errorCode(error);
    this.errorCodes[code] = (this.errorCodes[code] ?? 0) + 1;
    if (this.errorSamples.length < MAX_ERROR_SAMPLES) {
      this.errorSamples.push(`${code}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
}

/** One closed-loop caller: the next call starts when the previous one has answered. */
async function callLoop(call: Call, endAt: number, stats: Stats): Promise<void> {
  while (performance.now() < endAt) {
    const t0 = performance.now();
    try {
      const events = await call();
      const t1 = performance.now();
      stats.acknowledged += events;
      if (t1 <= endAt) {
        stats.calls++;
        stats.events += events;
        stats.latencies.push(t1 - t0);
      }
    } catch (error) {
      stats.fail(error);
    }
  }
}

function send(message: LoadMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    if (process.send === undefined) {
      reject(new Error("bench/grpc-load.ts runs as a child of bench/grpc.ts (no IPC channel)"));
      return;
    }
    process.send(message, undefined, {}, (error) => (error === null ? resolve() : reject(error)));
  });
}

function waitFor(type: "start" | "exit"): Promise<void> {
  return new Promise((resolve) => {
    const onMessage = (message: unknown) => {
      if ((message as { type?: unknown } | null)?.type !== type) return;
      process.off("message", onMessage);
      resolve();
    };
    process.on("message", onMessage);
  });
}

async function main(): Promise<void> {
  // The parent is gone (ended or killed): nothing left to report to.
  process.on("disconnect", () => process.exit(0));
  const config = JSON.parse(process.argv[2] ?? "") as LoadConfig;
  const open = { connect: connectConnection, "grpc-js": grpcJsConnection, h2: h2Connection }[config.client];
  const connections = config.streams.map(() => open(config));
  const stats = new Stats();
  try {
    // One call per connection opens it (and warms both ends) before the window starts.
    for (const n of await Promise.all(connections.map((c) => c.call()))) stats.acknowledged += n;
    const started = waitFor("start");
    await send({ type: "ready" });
    await started;

    const elu = performance.eventLoopUtilization();
    const startAt = performance.now();
    const endAt = startAt + config.durationMs;
    await Promise.all(
      connections.flatMap((connection, i) =>
        Array.from({ length: config.streams[i] ?? 0 }, () => callLoop(connection.call, endAt, stats)),
      ),
    );
    const { utilization } = performance.eventLoopUtilization(elu);
    const exit = waitFor("exit");
    await send({
      type: "result",
      result: {
        calls: stats.calls,
        events: stats.events,
        acknowledged: stats.acknowledged,
        errors: stats.errors,
        errorCodes: stats.errorCodes,
        errorSamples: stats.errorSamples,
        seconds: config.durationMs / 1000,
        latencies: Float64Array.from(stats.latencies),
        eventLoopUtilization: utilization,
      },
    });
    await exit;
  } finally {
    for (const connection of connections) connection.close();
  }
}

main().then(
  () => process.exit(0),
  async (error: unknown) => {
    const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
    try {
      await send({ type: "failed", message });
    } catch {
      process.stderr.write(`grpc-load: ${message}\n`);
    }
    process.exit(1);
  },
);
