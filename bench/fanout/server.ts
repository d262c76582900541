import { scrapeMetrics } from "../../test/support/metrics.js";
import type { ServerProcess } from "../../test/support/process.js";
import { sleep } from "../support.js";
import { STREAMS_GONE_TIMEOUT_MS } from "./settings.js";

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
