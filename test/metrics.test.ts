import { execFile, execFileSync } from "node:child_process";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.js";
import { EventsDB } from "../src/gen/grpc/eventsdb_pb.js";
import { type RunningServer, startServer } from "../src/server.js";
import { DIALECTS } from "./support/dialects.js";
import { scrapeMetrics } from "./support/metrics.js";
import { openStream, waitUntil } from "./support/sse.js";

function promtoolPath(): string {
  try {
    return execFileSync("sh", ["-c", "command -v promtool"], { encoding: "utf8" }).trim();
  } catch {
    throw new Error(
      "promtool not found: this test needs the Debian package prometheus (apt-get install -y prometheus)",
    );
  }
}

describe.each(DIALECTS)("metrics on $name", (dialect) => {
  let server: RunningServer;
  let url: string;
  beforeAll(async () => {
    // Default process metrics on, as in production: promtool must accept them too.
    const config = loadConfig(
      {},
      { "database-url": await dialect.url(), "rest-port": "0", "grpc-port": "0", host: "127.0.0.1" },
    );
    server = await startServer(config, { logger: false, defaultMetrics: true });
    url = `http://127.0.0.1:${server.restPort}`;
  });
  afterAll(async () => {
    await server.close();
  });

  it("counts every transport under the same names and labels, and passes promtool check metrics", async () => {
    const stream = await openStream(`${url}/events/stream?subject=m`);
    const res = await fetch(`${url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ source: "m", type: "t", subject: "m" }),
    });
    expect(res.status).toBe(200);
    const client = createClient(
      EventsDB,
      createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.grpcPort}` }),
    );
    await client.createEvent({ source: "m", type: "t", subject: "m" });
    await client.getEventByID({ id: 999999n }).catch(() => undefined);
    await waitUntil(() => stream.parser.events.length === 2, "both events on the stream");

    const metrics = await scrapeMetrics(url);
    const operations = (operation: string, status: string) =>
      metrics.value("app_event_operations_total", { operation, status });
    expect(operations("create_event", "success")).toBe(2);
    expect(operations("get_event", "error")).toBe(1);
    expect(operations("stream_events", "success")).toBe(1);
    expect(metrics.value("app_active_event_streams")).toBe(1);
    expect(metrics.value("eventsdb_delivery_lag_seconds_count")).toBeGreaterThanOrEqual(1);
    expect(metrics.value("eventsdb_writer_batch_events_sum")).toBe(2);
    expect(metrics.value("eventsdb_writer_queue_events")).toBe(0);
    expect(metrics.value("eventsdb_db_pool_connections_idle")).toBeGreaterThanOrEqual(
      dialect.name === "sqlite" ? 1 : 0,
    );
    const { text } = metrics;
    expect(text).toContain("process_resident_memory_bytes");
    expect(text).not.toContain("nodejs_active_handles_total");
    stream.close();

    const promtool = promtoolPath();
    const result = await new Promise<{ code: number; output: string }>((resolve) => {
      const child = execFile(promtool, ["check", "metrics"], (error, stdout, stderr) =>
        resolve({
          code: error === null ? 0 : Number((error as { code?: number }).code ?? 1),
          output: stdout + stderr,
        }),
      );
      child.stdin?.end(text);
    });
    expect(result.output).toBe("");
    expect(result.code).toBe(0);
  });
});
