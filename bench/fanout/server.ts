import { type Scrape, scrapeMetrics } from "../../test/support/metrics.js";
import type { ServerProcess } from "../../test/support/process.js";
import { sleep } from "../support.js";
import { LOOP_RESOLUTION_MS, STREAMS_GONE_TIMEOUT_MS } from "./settings.js";

/** What the bench reads off the server: its memory and stream counters (/metrics), whether it lives. */

/** The server's own view of its memory (prom-client default metrics), in KiB. */
export interface HeapMetrics {
  rssKb: number;
  heapTotalKb: number;
  heapUsedKb: number;
  externalKb: number;
}

export async function heapMetrics(server: ServerProcess): Promise<HeapMetrics> {
  const metrics = await scrapeMetrics(server.url);
  const kb = (name: string) => metrics.value(name) / 1024;
  return {
    rssKb: kb("process_resident_memory_bytes"),
    heapTotalKb: kb("nodejs_heap_size_total_bytes"),
    heapUsedKb: kb("nodejs_heap_size_used_bytes"),
    externalKb: kb("nodejs_external_memory_bytes"),
  };
}

export interface StreamMetrics {
  activeStreams: number;
  overflows: number;
  catchUpFallbacks: number;
  streamErrors: number;
}

export async function streamMetrics(server: ServerProcess): Promise<StreamMetrics> {
  const metrics = await scrapeMetrics(server.url);
  return {
    activeStreams: metrics.counter("app_active_event_streams"),
    overflows: metrics.counter("eventsdb_stream_buffer_overflows_total"),
    catchUpFallbacks: metrics.counter("eventsdb_stream_catch_up_fallbacks_total"),
    streamErrors: metrics.counter("app_event_operations_total", {
      operation: "stream_events",
      status: "error",
    }),
  };
}

/** Polls /metrics until app_active_event_streams is at most `expected` (streams closed server-side). */
export async function waitForStreams(server: ServerProcess, expected: number): Promise<number> {
  const deadline = Date.now() + STREAMS_GONE_TIMEOUT_MS;
  for (;;) {
    const { activeStreams } = await streamMetrics(server);
    if (activeStreams <= expected || Date.now() >= deadline) return activeStreams;
    await sleep(100);
  }
}

export function assertAlive(server: ServerProcess): void {
  const exit = server.exitStatus();
  if (exit !== undefined) throw new Error(`the server died during the run (${exit})`);
}

/** The server's own view of a run: its event-loop delay and the time it spent per request. */
export interface ServerView {
  /** prom-client's event-loop delay since the scrape before (it resets on each scrape), ms beyond 10. */
  loop: { p50Ms: number; p99Ms: number; maxMs: number };
  /** create_event (one POST) in the server: p50 / p99 as the histogram bucket they fall in (≤ ms). */
  postLeMs: { p50: number; p99: number; count: number };
  /** One group-commit transaction, ≤ ms. */
  commitLeMs: { p50: number; p99: number; count: number };
  /** Commit → hand-over to a stream's socket (eventsdb_delivery_lag_seconds), ≤ ms. */
  handOverLeMs: { p50: number; p99: number; count: number };
}

/** Cumulative bucket counts of a histogram (labels matched exactly, `le` aside). */
function buckets(scrape: Scrape, name: string, labels: Record<string, string>): Map<number, number> {
  const out = new Map<number, number>();
  for (const sample of scrape.series(`${name}_bucket`)) {
    const { le, ...rest } = sample.labels;
    if (le === undefined) continue;
    const wanted = Object.entries(labels);
    if (Object.keys(rest).length !== wanted.length || !wanted.every(([k, v]) => rest[k] === v)) continue;
    out.set(le === "+Inf" ? Number.POSITIVE_INFINITY : Number(le), sample.value);
  }
  return out;
}

/** p50 / p99 of what a histogram counted between two scrapes, as the upper bound of their bucket (ms). */
function bucketPercentiles(
  before: Scrape,
  after: Scrape,
  name: string,
  labels: Record<string, string> = {},
): { p50: number; p99: number; count: number } {
  const start = buckets(before, name, labels);
  const end = [...buckets(after, name, labels)].sort((a, b) => a[0] - b[0]);
  const delta = end.map(([le, count]) => [le, count - (start.get(le) ?? 0)] as const);
  const count = delta.at(-1)?.[1] ?? 0;
  const at = (p: number) => {
    if (count === 0) return Number.NaN;
    const found = delta.find(([, cumulative]) => cumulative >= (p / 100) * count);
    return (found?.[0] ?? Number.POSITIVE_INFINITY) * 1000;
  };
  return { p50: at(50), p99: at(99), count };
}

/** Scrape before a run: resets the server's event-loop delay histogram and keeps the counts. */
export function scrapeBefore(server: ServerProcess): Promise<Scrape> {
  return scrapeMetrics(server.url);
}

export async function serverView(server: ServerProcess, before: Scrape): Promise<ServerView> {
  const after = await scrapeMetrics(server.url);
  // prom-client samples every 10 ms (its default), as the bench's own monitors do: the delay beyond.
  const beyond = (name: string) => Math.max(0, after.value(name) * 1000 - LOOP_RESOLUTION_MS);
  return {
    loop: {
      p50Ms: beyond("nodejs_eventloop_lag_p50_seconds"),
      p99Ms: beyond("nodejs_eventloop_lag_p99_seconds"),
      maxMs: beyond("nodejs_eventloop_lag_max_seconds"),
    },
    postLeMs: bucketPercentiles(before, after, "app_event_operation_duration_seconds", {
      operation: "create_event",
    }),
    commitLeMs: bucketPercentiles(before, after, "eventsdb_writer_commit_duration_seconds"),
    handOverLeMs: bucketPercentiles(before, after, "eventsdb_delivery_lag_seconds"),
  };
}
