/**
 * h2load (nghttp2's HTTP/2 load generator, C) as a gRPC load generator for `npm run bench -- grpc`:
 * it sends one prepared gRPC request body (a length-prefixed protobuf message) over N HTTP/2
 * connections with M concurrent streams each, closed loop, for a fixed time. A client that costs a
 * few percent of a core, so the rows it drives measure the server rather than the client, the way
 * ghz is used for gRPC servers elsewhere. It does not read grpc-status (a failed call is still HTTP
 * 200): the runner counts failures from the server's own counters.
 */
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { CreateEventRequestSchema, CreateEventsRequestSchema } from "../src/gen/grpc/eventsdb_pb.js";
import { grpcFrame } from "../src/transports/grpc/fast-path.js";

export const H2LOAD = "h2load";
/** Where h2load comes from, for the message when it is missing. */
export const H2LOAD_PACKAGE = "nghttp2-client";

/** h2load's version line, or undefined when it is not installed. */
export function h2loadVersion(): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(H2LOAD, ["--version"], { timeout: 5_000 }, (error, stdout) =>
      resolve(error === null ? stdout.trim() : undefined),
    );
  });
}

export interface H2loadSpec {
  /** 127.0.0.1 port (h2c, prior knowledge). */
  readonly port: number;
  readonly method: "CreateEvent" | "CreateEvents";
  /** The framed request body file (see writeBodies). */
  readonly bodyFile: string;
  readonly connections: number;
  /** Concurrent streams per connection. */
  readonly streamsPerConnection: number;
  readonly warmupSeconds: number;
  readonly seconds: number;
  /** Per-request log (start µs, HTTP status, elapsed µs) for the latency percentiles; h2load appends to it. */
  readonly logFile: string;
}

export interface H2loadResult {
  /** Requests answered with HTTP 2xx in the measured window (gRPC failures included; see above). */
  readonly succeeded: number;
  /** Requests that failed at the HTTP/2 level (failed + errored + timeout). */
  readonly failed: number;
  /** Elapsed ms of every request of the measured window. */
  readonly latenciesMs: number[];
  readonly output: string;
}

export interface H2loadHandle {
  readonly pid: number;
  readonly result: Promise<H2loadResult>;
  /** SIGTERM (by pid) if still running, and wait for the exit. */
  kill(): Promise<void>;
}

export function startH2load(spec: H2loadSpec): H2loadHandle {
  const args = [
    "--duration",
    String(spec.seconds),
    "--warm-up-time",
    String(spec.warmupSeconds),
    "--clients",
    String(spec.connections),
    "--max-concurrent-streams",
    String(spec.streamsPerConnection),
    "--threads",
    "1",
    "--data",
    spec.bodyFile,
    "--header",
    "content-type: application/grpc",
    "--header",
    "te: trailers",
    "--log-file",
    spec.logFile,
    `http://127.0.0.1:${spec.port}/grpc.EventsDB/${spec.method}`,
  ];
  const child = spawn(H2LOAD, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    output += chunk;
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    output += chunk;
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => resolve(code));
  });
  const result = exited.then(async (code) => {
    if (code !== 0) throw new Error(`h2load exited with code ${code}:\n${output.trim()}`);
    return parseResult(output, await readFile(spec.logFile, "utf8"));
  });
  result.catch(() => {}); // observed by the caller
  return {
    pid: child.pid ?? -1,
    result,
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        process.kill(child.pid, "SIGTERM");
      }
      await exited.catch(() => {});
    },
  };
}

const REQUESTS_LINE =
  /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/;

/** The counts of h2load's summary and the latencies of its log. */
export function parseResult(output: string, log: string): H2loadResult {
  const match = REQUESTS_LINE.exec(output);
  if (match === null) throw new Error(`h2load printed no request summary:\n${output.trim()}`);
  const [, , , , succeeded, failed, errored, timeout] = match.map(Number) as number[];
  const latenciesMs: number[] = [];
  for (const line of log.split("\n")) {
    const elapsedUs = Number(line.split("\t")[2]);
    if (line !== "" && Number.isFinite(elapsedUs)) latenciesMs.push(elapsedUs / 1000);
  }
  return {
    succeeded: succeeded as number,
    failed: (failed as number) + (errored as number) + (timeout as number),
    latenciesMs,
    output,
  };
}

/**
 * The two request bodies h2load sends, as gRPC frames: one CreateEvent (100-byte random data) and
 * one CreateEvents of `batchEvents` events over `subjects` subjects. Returns their file names.
 */
export async function writeBodies(
  dir: string,
  options: { dataBytes: number; subjects: number; batchEvents: number },
): Promise<{ single: string; batch: string }> {
  const event = (k: number) => ({
    source: "bench-h2load",
    type: "bench.created",
    subject: `bench/${k % options.subjects}`,
    data: randomBytes(options.dataBytes),
  });
  const single = path.join(dir, "create-event.bin");
  const batch = path.join(dir, "create-events.bin");
  await writeFile(
    single,
    grpcFrame(toBinary(CreateEventRequestSchema, create(CreateEventRequestSchema, event(0)))),
  );
  await writeFile(
    batch,
    grpcFrame(
      toBinary(
        CreateEventsRequestSchema,
        create(CreateEventsRequestSchema, {
          events: Array.from({ length: options.batchEvents }, (_, k) => event(k)),
        }),
      ),
    ),
  );
  return { single, batch };
}
