import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CONNECT_KINDS, connectPeer, GrpcJsClient } from "../support/grpc.js";
import { startTestServer, type TestServer } from "../support/server.js";

const EVENT_BYTES = 1000;
/** Two events fit the queue, three never do. */
const QUEUE_BYTES = 2048;

/** Regression: a batch larger than the whole write queue got 503 "retry shortly" forever. */
describe("a batch larger than --write-queue-bytes", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer("sqlite::memory:", {
      "max-event-bytes": String(EVENT_BYTES),
      "write-queue-bytes": String(QUEUE_BYTES),
    });
  });
  afterAll(async () => {
    await t.close();
  });

  const data = Buffer.alloc(EVENT_BYTES, 7);
  const batch = (n: number, subject: string) =>
    Array.from({ length: n }, () => ({ source: "s", type: "t", subject, data }));
  const stored = async (subject: string) =>
    ((await (await fetch(`${t.url}/events?subject=${subject}`)).json()) as { events: unknown[] }).events
      .length;

  it("is refused over REST with 413 payload_too_large, on an idle server, and nothing is stored", async () => {
    const body = (n: number) =>
      JSON.stringify(batch(n, "rest").map((e) => ({ ...e, data: e.data.toString("base64") })));
    const res = await fetch(`${t.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: body(3),
    });
    expect(res.status).toBe(413);
    expect(res.headers.get("retry-after")).toBeNull();
    const error = ((await res.json()) as { error: { code: string; message: string } }).error;
    expect(error.code).toBe("payload_too_large");
    expect(error.message).toContain("--write-queue-bytes");
    expect(await stored("rest")).toBe(0);
    const fits = await fetch(`${t.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: body(2),
    });
    expect(fits.status).toBe(200);
    expect(await stored("rest")).toBe(2);
  });

  it.each(CONNECT_KINDS)("is refused over %s with INVALID_ARGUMENT (not retryable)", async (kind) => {
    const peer = connectPeer(kind, t);
    try {
      const subject = `connect-${kind.replace(/\W+/g, "-")}`;
      const failure = await peer.client.createEvents({ events: batch(3, subject) }).then(
        () => undefined,
        (error: { code: Code; rawMessage: string }) => error,
      );
      expect(failure?.code).toBe(Code.InvalidArgument);
      expect(failure?.rawMessage).toContain("--write-queue-bytes");
      expect(await stored(subject)).toBe(0);
    } finally {
      peer.close();
    }
  });

  it("is refused on the unary gRPC short path (grpc-js) with INVALID_ARGUMENT", async () => {
    const client = new GrpcJsClient(t.server.grpcPort);
    try {
      const failure = await client.failure("CreateEvents", { events: batch(3, "grpc-js") });
      expect(failure.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(failure.details).toContain("--write-queue-bytes");
      expect(await stored("grpc-js")).toBe(0);
    } finally {
      client.close();
    }
  });
});
