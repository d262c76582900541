import { randomBytes } from "node:crypto";
import http2 from "node:http2";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { StreamEventsFromSubjectRequestSchema } from "../../src/gen/grpc/eventsdb_pb.js";
import { DIALECTS } from "../support/dialects.js";
import { scrapeMetrics } from "../support/metrics.js";
import { serversPerTest, type TestServer } from "../support/server.js";
import { waitUntil } from "../support/sse.js";

/** One event of nearly 1 MiB (--max-event-bytes): every page read of it answers ~1.3 MB. */
const EVENT_BYTES = 1_000_000;
const REQUESTS = 40;
const FLAGS = { "write-timeout": "2", "connection-buffer-bytes": String(2 * 1024 * 1024) };

/** app_event_operations_total{operation, status}. */
async function operations(t: TestServer, operation: string, status: string): Promise<number> {
  return (await scrapeMetrics(t.url)).counter("app_event_operations_total", { operation, status });
}

/** gRPC length-prefixed message. */
function grpcFrame(message: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

// Regression (issue 10, item 16): readers of GET /events?limit=1000 that never read (HTTP/1.1
// pipelining, or HTTP/2 with a zero window) took RSS from 100 MB to 5.5 GB; nothing ever closed
// their responses and /healthz stopped answering.
describe.each(DIALECTS)("clients that never read their responses, on $name", (dialect) => {
  const { start, onCleanup } = serversPerTest(() => dialect.url());

  const seed = async (t: TestServer) => {
    const res = await fetch(`${t.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        source: "s",
        type: "t",
        subject: "big",
        data: randomBytes(EVENT_BYTES).toString("base64"),
      }),
    });
    expect(res.status).toBe(200);
  };

  it("HTTP/1.1: pipelined page reads wait for earlier answers to leave, and the unread connection is closed after --write-timeout", async () => {
    const t = await start(FLAGS);
    await seed(t);
    const socket = net.connect(t.server.restPort, "127.0.0.1");
    onCleanup(() => socket.destroy());
    socket.on("error", () => {});
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    socket.pause(); // never reads
    const request = "GET /events?subject=big&limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n";
    socket.write(request.repeat(REQUESTS));
    // Meanwhile the server answers others.
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
    // After --write-timeout the server drops the connection, and with it the reads still waiting.
    await waitUntil(
      async () =>
        (await operations(t, "historic_events", "success")) +
          (await operations(t, "historic_events", "error")) ===
        REQUESTS,
      "every read answered or dropped",
      20_000,
    );
    let closedByServer = false;
    void closed.then(() => {
      closedByServer = true;
    });
    socket.resume(); // a paused socket does not see the reset; reading does
    await waitUntil(() => closedByServer, "the connection to be closed by the server");
    // Only the answers that fit the socket buffers and --connection-buffer-bytes were read at all.
    const read = await operations(t, "historic_events", "success");
    expect(read).toBeGreaterThan(0);
    expect(read).toBeLessThanOrEqual(REQUESTS / 2);
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
  });

  it("HTTP/2 with a zero window: REST, Connect and gRPC page reads wait, are cancelled after --write-timeout, and /healthz answers", async () => {
    const t = await start(FLAGS);
    await seed(t);
    const session = http2.connect(t.url, { settings: { initialWindowSize: 0 } });
    onCleanup(() => session.destroy());
    session.on("error", () => {});
    const grpcRequest = grpcFrame(
      toBinary(
        StreamEventsFromSubjectRequestSchema,
        create(StreamEventsFromSubjectRequestSchema, { subject: "big", limit: 1000 }),
      ),
    );
    const ended: Promise<number>[] = [];
    for (let i = 0; i < REQUESTS; i++) {
      const kind = i % 3;
      const stream =
        kind === 0
          ? session.request({ ":path": "/events?subject=big&limit=1000" })
          : session.request({
              ":method": "POST",
              ":path": "/grpc.EventsDB/GetHistoricEventsFromSubject",
              "content-type": kind === 1 ? "application/json" : "application/grpc",
              ...(kind === 2 ? { te: "trailers" } : {}),
            });
      stream.on("error", () => {});
      ended.push(new Promise((resolve) => stream.once("close", () => resolve(stream.rstCode ?? -1))));
      stream.end(
        kind === 0 ? undefined : kind === 1 ? JSON.stringify({ subject: "big", limit: 1000 }) : grpcRequest,
      );
    }
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
    const codes = await Promise.race([
      Promise.all(ended),
      new Promise<"timed out">((resolve) => setTimeout(() => resolve("timed out"), 20_000)),
    ]);
    expect(codes).not.toBe("timed out");
    // Every unread answer was cancelled (RST_STREAM CANCEL), none was sent.
    expect(new Set(codes as number[])).toEqual(new Set([http2.constants.NGHTTP2_CANCEL]));
    const read = await operations(t, "historic_events", "success");
    expect(read).toBeLessThanOrEqual(REQUESTS / 4);
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
  });
});
