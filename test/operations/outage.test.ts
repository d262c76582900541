import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { selected } from "../support/dialects.js";
import { type MariaDb, startMariaDb } from "../support/mariadb.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { openStream, waitUntil } from "../support/sse.js";

describe.runIf(selected("mysql"))("store outage", () => {
  let db: MariaDb;
  let t: TestServer;
  beforeAll(async () => {
    db = await startMariaDb();
    t = await startTestServer(db.url);
  });
  afterAll(async () => {
    await t?.close();
    await db?.stop();
  });

  const post = (subject: string) =>
    fetch(`${t.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ source: "outage", type: "t", subject }),
    });

  it("turns not ready, fails appends fast, and streams resume without a gap when the store returns", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: t.grpcUrl }));
    const ids: number[] = [];
    for (let i = 0; i < 3; i++) ids.push(((await (await post(`o/${i}`)).json()) as { id: number }).id);
    const live = await openStream(`${t.url}/events/stream?subject=o&recursive=true`);
    try {
      await waitUntil(() => live.parser.events.length === 3, "the first events");

      await db.halt();
      const ready = await fetch(`${t.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(await ready.json()).toMatchObject({
        status: "unavailable",
        checks: { store: { status: "unavailable" } },
      });
      expect((await health.check({ service: "" })).status).toBe(
        HealthCheckResponse_ServingStatus.NOT_SERVING,
      );
      for (let i = 0; i < 3; i++) {
        const res = await post("o/down");
        expect(res.status).toBe(503);
        expect(res.headers.get("retry-after")).toBe("1");
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe("unavailable");
      }
      const grpcAppend = await createClient(
        (await import("../../src/gen/grpc/eventsdb_pb.js")).EventsDB,
        createGrpcTransport({ baseUrl: t.grpcUrl }),
      )
        .createEvent({ source: "outage", type: "t", subject: "o/grpc" })
        .then(
          () => Code[0],
          (error: unknown) => Code[ConnectError.from(error).code],
        );
      expect(grpcAppend).toBe("Unavailable");
      // A stream opened during the outage waits for the store instead of failing.
      const late = await openStream(`${t.url}/events/stream?subject=o&recursive=true`);

      await db.resume();
      await waitUntil(async () => (await fetch(`${t.url}/readyz`)).status === 200, "ready again", 20_000);
      expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
      await waitUntil(
        async () => {
          const res = await post("o/after");
          if (res.status === 200) ids.push(((await res.json()) as { id: number }).id);
          return res.status === 200;
        },
        "an append to succeed again",
        20_000,
      );
      for (let i = 0; i < 2; i++)
        ids.push(((await (await post(`o/after/${i}`)).json()) as { id: number }).id);

      await waitUntil(() => live.parser.events.length === ids.length, "the live stream to continue");
      expect(live.parser.ids()).toEqual(ids);
      await waitUntil(() => late.parser.events.length === ids.length, "the late stream to catch up", 20_000);
      expect(late.parser.ids()).toEqual(ids);
      late.close();
    } finally {
      live.close();
    }
  });
});
