import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it, vi } from "vitest";
import { loadConfig } from "../../src/config.js";
import { CreateEventRequestSchema } from "../../src/gen/grpc/eventsdb_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { type ConnectKind, connectPeer, GrpcJsClient, grpcMessage, rawGrpcCall } from "../support/grpc.js";
import { scrapeMetrics } from "../support/metrics.js";
import { openStream } from "../support/sse.js";

/**
 * `--rate-limit N`: N requests per minute per caller, the caller being the token's name, or the
 * client IP on an open server; health, readiness, metrics and gRPC health are never limited.
 * Requests over the limit are refused in each protocol's own shape with the time to wait.
 * Clients on other loopback addresses (127.0.0.2, …) play other IPs. Time is an injected
 * monotonic clock, stepped by the tests.
 */

const TOKEN = "rate-limit-token-0123456789";
const LIMIT = 5;

const servers: RunningServer[] = [];
const dirs: string[] = [];
const peers: { close(): void }[] = [];

afterEach(async () => {
  vi.useRealTimers();
  for (const peer of peers.splice(0)) peer.close();
  await Promise.all(servers.splice(0).map((server) => server.close()));
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** A stepped monotonic clock (ms). */
function steppedClock() {
  const clock = { now: 0, read: () => clock.now };
  return clock;
}

async function start(
  env: Record<string, string>,
  options: { limit?: number; clock?: () => number } = {},
): Promise<RunningServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-rate-"));
  dirs.push(dir);
  const config = loadConfig(env, {
    "database-url": `sqlite:${path.join(dir, "events.db")}`,
    "rest-port": "0",
    "grpc-port": "0",
    host: "127.0.0.1",
    "rate-limit": String(options.limit ?? LIMIT),
  });
  const server = await startServer(config, {
    logger: false,
    defaultMetrics: false,
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  });
  servers.push(server);
  return server;
}

interface Reply {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/** One request from `from` (a loopback address), on a fresh connection. */
function request(
  port: number,
  options: { path: string; method?: string; token?: string; from?: string; body?: string; type?: string },
): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  if (options.type !== undefined) headers["content-type"] = options.type;
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        path: options.path,
        method: options.method ?? "GET",
        headers,
        localAddress: options.from ?? "127.0.0.1",
        agent: false,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          body += chunk;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

const statuses = async (n: number, send: () => Promise<Reply>): Promise<number[]> => {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await send()).status);
  return out;
};

function expectTooManyRequests(reply: Reply, limit = LIMIT): number {
  expect(reply.status, reply.body).toBe(429);
  expect(reply.headers["content-type"]).toMatch(/^application\/json/);
  const body = JSON.parse(reply.body) as { error: { code: string; message: string } };
  expect(body.error.code).toBe("too_many_requests");
  expect(body.error.message).toContain(`${limit} requests per minute`);
  const retryAfter = Number(reply.headers["retry-after"]);
  expect(Number.isInteger(retryAfter), `Retry-After ${reply.headers["retry-after"]}`).toBe(true);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(63); // a minute, and the one-twentieth it may start late
  return retryAfter;
}

const CREATE_EVENT = toBinary(
  CreateEventRequestSchema,
  create(CreateEventRequestSchema, { source: "rl", type: "t", subject: "rl/grpc" }),
);

describe(`--rate-limit ${LIMIT}`, () => {
  describe("with AUTH_TOKEN: limited per token name", () => {
    it("refuses the token's 6th request on every transport, each in its own shape, with the time to wait", async () => {
      const server = await start({ AUTH_TOKEN: TOKEN }, { clock: () => 0 });
      const port = server.restPort;
      const url = `http://127.0.0.1:${port}`;
      const subjects = () => request(port, { path: "/subjects", token: TOKEN });
      expect(await statuses(LIMIT, subjects)).toEqual([200, 200, 200, 200, 200]);
      const retryAfter = expectTooManyRequests(await subjects());
      expect(retryAfter).toBe(63); // the clock stood still: the whole window and its last bucket

      // REST write and SSE: the JSON error, 429, Retry-After; nothing stored.
      expectTooManyRequests(
        await request(port, {
          path: "/events",
          method: "POST",
          token: TOKEN,
          type: "application/json",
          body: JSON.stringify({ source: "rl", type: "t", subject: "rl/1" }),
        }),
      );
      const sse = await openStream(`${url}/events/stream`, { authorization: `Bearer ${TOKEN}` });
      sse.close();
      expect(sse.response.status).toBe(429);
      expect(sse.response.headers.get("retry-after")).toBe("63");

      // Connect unary: its JSON error with HTTP 429 and Retry-After.
      const connectRaw = await request(port, {
        path: "/grpc.EventsDB/ListSubjects",
        method: "POST",
        token: TOKEN,
        type: "application/json",
        body: "{}",
      });
      expect(connectRaw.status).toBe(429);
      expect(connectRaw.headers["retry-after"]).toBe("63");
      expect(JSON.parse(connectRaw.body)).toMatchObject({ code: "resource_exhausted" });

      // gRPC, on the Connect path (ListSubjects) and on the unary fast path (CreateEvent):
      // HTTP 200, grpc-status 8 in a trailers-only response, grpc-retry-pushback-ms.
      for (const [route, body] of [
        ["/grpc.EventsDB/ListSubjects", Buffer.alloc(0)],
        ["/grpc.EventsDB/CreateEvent", Buffer.from(CREATE_EVENT)],
      ] as const) {
        const answer = await rawGrpcCall(`http://127.0.0.1:${server.grpcPort}`, route, grpcMessage(body), {
          authorization: `Bearer ${TOKEN}`,
        });
        expect(answer.httpStatus, route).toBe(200);
        expect(answer.trailersOnly, route).toBe(true);
        expect(answer.grpcStatus, route).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
        expect(answer.fields["grpc-retry-pushback-ms"], route).toBe("63000");
        expect(answer.rawMessage, route).toContain("5 requests per minute");
      }

      // Every client library reads RESOURCE_EXHAUSTED (before: a gRPC client saw UNAVAILABLE).
      const headers = { authorization: `Bearer ${TOKEN}` };
      const urls = { url, grpcUrl: `http://127.0.0.1:${server.grpcPort}` };
      const kinds: ConnectKind[] = [
        "connect (HTTP/1.1)",
        "connect (HTTP/2)",
        "grpc-web (HTTP/1.1)",
        "grpc (HTTP/2)",
      ];
      for (const kind of kinds) {
        const peer = connectPeer(kind, urls);
        peers.push(peer);
        for (const [what, call] of [
          ["listSubjects", () => peer.client.listSubjects({}, { headers })],
          [
            "createEvent",
            () => peer.client.createEvent({ source: "rl", type: "t", subject: "rl/c" }, { headers }),
          ],
          [
            "stream",
            async () => {
              for await (const _ of peer.client.streamEventsFromSubject({ subject: "rl" }, { headers }))
                break;
            },
          ],
        ] as const) {
          const error = await (call as () => Promise<unknown>)().then(
            () => undefined,
            (e: unknown) => ConnectError.from(e),
          );
          expect(error?.code, `${kind} ${what}`).toBe(Code.ResourceExhausted);
          expect(error?.rawMessage, `${kind} ${what}`).toContain("5 requests per minute");
        }
      }
      const grpcJs = new GrpcJsClient(server.grpcPort, true);
      peers.push(grpcJs);
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${TOKEN}`);
      const refused = await new Promise<grpc.ServiceError>((resolve) =>
        (grpcJs.client.CreateEvent as (...args: unknown[]) => void).call(
          grpcJs.client,
          { source: "rl", type: "t", subject: "rl/j" },
          metadata,
          (error: grpc.ServiceError) => resolve(error),
        ),
      );
      expect(refused.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(await server.eventLog.repository.lastId()).toBe(0);
      const refusals = (await scrapeMetrics(url)).value("eventsdb_requests_refused_total", {
        reason: "rate_limit",
      });
      expect(refusals).toBeGreaterThanOrEqual(15);
      expect(refusals).toBeLessThan(100);
    });

    it("counts the token as one caller from every address", async () => {
      const port = (await start({ AUTH_TOKEN: TOKEN }, { clock: () => 0 })).restPort;
      const from = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"];
      const replies: number[] = [];
      for (const address of from) {
        replies.push((await request(port, { path: "/subjects", token: TOKEN, from: address })).status);
      }
      expect(replies).toEqual([200, 200, 200, 200, 200, 429]);
    });

    it("does not count refused credentials: they are the failed-authentication throttle's", async () => {
      const port = (await start({ AUTH_TOKEN: TOKEN }, { clock: () => 0 })).restPort;
      const wrong = await statuses(LIMIT * 3, () => request(port, { path: "/subjects", token: "guess" }));
      expect(wrong).toEqual(Array(LIMIT * 3).fill(401));
      // …and they cost the token nothing: it still has its whole budget.
      expect(await statuses(LIMIT, () => request(port, { path: "/subjects", token: TOKEN }))).toEqual(
        Array(LIMIT).fill(200),
      );
    });
  });

  describe("open server (no token): limited per IP", () => {
    it("lets 5 requests of an address through, answers the 6th 429, and keeps other addresses apart", async () => {
      const port = (await start({}, { clock: () => 0 })).restPort;
      const from = (address: string) => () => request(port, { path: "/events?limit=1", from: address });
      expect(await statuses(LIMIT, from("127.0.0.1"))).toEqual(Array(LIMIT).fill(200));
      expectTooManyRequests(await from("127.0.0.1")());
      expect(await statuses(LIMIT, from("127.0.0.2"))).toEqual(Array(LIMIT).fill(200));
      expectTooManyRequests(await from("127.0.0.2")());
    });

    it("never limits /healthz, /readyz, /metrics and gRPC health, nor unknown routes", async () => {
      const server = await start({}, { clock: () => 0 });
      const port = server.restPort;
      expect(await statuses(LIMIT, () => request(port, { path: "/subjects" }))).toEqual(
        Array(LIMIT).fill(200),
      );
      expectTooManyRequests(await request(port, { path: "/subjects" }));
      // A load balancer's probes and Prometheus' scrapes from the same, limited, address.
      for (const probe of ["/healthz", "/readyz", "/metrics"]) {
        expect(await statuses(3 * LIMIT, () => request(port, { path: probe })), probe).toEqual(
          Array(3 * LIMIT).fill(200),
        );
      }
      const health = createClient(
        Health,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.grpcPort}` }),
      );
      for (let i = 0; i < 3 * LIMIT; i++) {
        expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
      }
      expect(await statuses(10, () => request(port, { path: "/nope" }))).toEqual(Array(10).fill(404));
    });
  });

  it("is a sliding window on a monotonic clock: no 60 s hold more than the limit, and a stepped wall clock changes nothing", async () => {
    const LIMIT10 = 10;
    const clock = steppedClock();
    const server = await start({ AUTH_TOKEN: TOKEN }, { limit: LIMIT10, clock: clock.read });
    const port = server.restPort;
    const accepted: number[] = [];
    const send = async () => {
      const reply = await request(port, { path: "/subjects", token: TOKEN });
      if (reply.status === 200) accepted.push(clock.now);
      else expectTooManyRequests(reply, LIMIT10);
      return reply;
    };
    // One at 0 s, nine at 57 s: the limit is reached.
    await send();
    clock.now = 57_000;
    for (let i = 0; i < 9; i++) await send();
    expect(accepted).toHaveLength(10);
    // 4 s later a fixed one-minute window would have started afresh and let ten more through
    // (19 in 4 s). Not here.
    clock.now = 61_000;
    for (let i = 0; i < 10; i++) expect((await send()).status).toBe(429);
    // The wall clock steps back an hour: windows and Retry-After do not move (they used to grow
    // to an hour).
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(Date.now() - 3_600_000);
    const refused = await send();
    const wait = Number(refused.headers["retry-after"]);
    expect(wait).toBe(2); // the first request (at 0 s) leaves the window at 63 s
    clock.now += wait * 1000;
    expect((await send()).status).toBe(200);
    // Steady demand, one request a second for four minutes: never more than 10 in any 60 s.
    for (let t = clock.now + 1000; t <= 300_000; t += 1000) {
      clock.now = t;
      await send();
    }
    let most = 0;
    for (const [i, at] of accepted.entries()) {
      most = Math.max(most, accepted.filter((other, j) => j >= i && other - at < 60_000).length);
    }
    expect(most).toBe(LIMIT10);
    expect(accepted.length).toBeGreaterThanOrEqual(40); // and it keeps letting requests through
  });
});
