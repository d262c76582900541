import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningServer, startServer } from "../../src/server.js";
import { selected } from "../support/dialects.js";
import { connectPeer } from "../support/grpc.js";
import { type MariaDb, startMariaDb } from "../support/mariadb.js";
import { scrapeMetrics } from "../support/metrics.js";
import { PostLoad } from "../support/process.js";
import { testConfig } from "../support/server.js";
import { openStream, waitUntil } from "../support/sse.js";

interface LogLine {
  level: number;
  msg: string;
  err?: { stack?: string };
  [key: string]: unknown;
}

describe.runIf(selected("mysql"))("logs during a store outage under load", () => {
  let db: MariaDb;
  let server: RunningServer;
  let url: string;
  const lines: LogLine[] = [];
  beforeAll(async () => {
    db = await startMariaDb();
    const stream = new Writable({
      write(chunk, _encoding, done) {
        for (const line of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(line) as LogLine);
        done();
      },
    });
    server = await startServer(testConfig(db.url, { "db-timeout": "1", "store-poll-ms": "20" }), {
      logger: { level: "info", stream },
      defaultMetrics: false,
    });
    url = `http://127.0.0.1:${server.restPort}`;
  });
  afterAll(async () => {
    await server?.close();
    await db?.stop();
  });

  const storeErrors = async (): Promise<Map<string, number>> => {
    const series = (await scrapeMetrics(url)).series("eventsdb_store_errors_total");
    return new Map(series.map((s) => [s.labels.operation as string, s.value]));
  };

  it("writes a line when the store fails and one when it works again, and counts every failure in the metric", async () => {
    const ok = await fetch(`${url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ source: "log", type: "t", subject: "l/0" }),
    });
    expect(ok.status).toBe(200);
    const live = await openStream(`${url}/events/stream?subject=l&recursive=true`);
    const peer = connectPeer("connect (HTTP/1.1)", { url, grpcUrl: url });
    let reads503 = 0;
    let stop = false;
    try {
      await waitUntil(() => live.parser.events.length === 1, "the stored event on the stream");
      const before = lines.length;
      await db.halt();
      const load = new PostLoad(url, { loops: 6, prefix: "l/load", requestTimeoutMs: 10_000 }).start();
      const readers = Array.from({ length: 4 }, async () => {
        while (!stop) {
          const res = await fetch(`${url}/events/1`);
          if (res.status === 503) reads503++;
          await (await fetch(`${url}/readyz`)).text();
          await peer.client.getEventByID({ id: 1n }).catch(() => {});
        }
      });
      // A late stream waits for the store, retrying its first page.
      const late = await openStream(`${url}/events/stream?subject=l&recursive=true`);
      await new Promise((r) => setTimeout(r, 3_000));
      stop = true;
      await Promise.all(readers);
      await load.stop();
      const failed = load.outcomes.filter((o) => o.status === 503).length;
      const during = lines.slice(before);
      const loud = during.filter((l) => l.level >= 40);
      const stacks = during.filter((l) => l.err?.stack !== undefined);

      // Hundreds of failed requests (more on a faster machine), one line.
      expect(failed + reads503).toBeGreaterThan(50);
      expect(loud.map((l) => l.msg)).toEqual(["store failing"]);
      expect(stacks).toHaveLength(1);
      const counted = await storeErrors();
      const total = [...counted.values()].reduce((a, b) => a + b, 0);
      expect(total).toBeGreaterThanOrEqual(reads503);
      for (const operation of ["get", "ping", "poll", "page", "append"]) {
        expect(counted.get(operation) ?? 0, operation).toBeGreaterThan(0);
      }

      await db.resume();
      await waitUntil(
        () => lines.some((l) => l.msg === "store works again"),
        "the line saying the store works again",
        20_000,
      );
      late.close();
    } finally {
      stop = true;
      live.close();
      peer.close();
    }
  });
});
