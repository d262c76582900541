import http from "node:http";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AUTH_FAILURES_PER_MINUTE } from "../../src/auth/throttle.js";
import { loadConfig } from "../../src/config.js";
import { CreateEventRequestSchema } from "../../src/gen/grpc/eventsdb_pb.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { type ConnectKind, connectPeer, grpcMessage, rawGrpcCall } from "../support/grpc.js";
import { scrapeMetrics } from "../support/metrics.js";
import { openStream } from "../support/sse.js";

/**
 * Item 4 of issue 10: one throttle for failed authentications on every transport. While an
 * address has 30 failures in the last minute, every request from it that needs authentication
 * is refused 429 / RESOURCE_EXHAUSTED whatever its token — the right one included, over the gRPC
 * unary fast path too (it used to succeed there, so guessing went on at line rate). With
 * --trust-proxy the address is the client's from X-Forwarded-For. Item 21: the throttle runs on
 * a monotonic clock (injected here) and is not moved by a wall clock stepped back an hour.
 */

const TOKEN = "throttle-token-0123456789";
const servers: RunningServer[] = [];
const closers: { close(): void }[] = [];

afterEach(async () => {
  vi.useRealTimers();
  for (const closer of closers.splice(0)) closer.close();
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function start(flags: Record<string, string>, clock: () => number): Promise<RunningServer> {
  const config = loadConfig(
    { AUTH_TOKEN: TOKEN },
    { "database-url": "sqlite::memory:", "rest-port": "0", "grpc-port": "0", host: "127.0.0.1", ...flags },
  );
  const server = await startServer(config, { logger: false, defaultMetrics: false, clock });
  servers.push(server);
  return server;
}

function get(
  port: number,
  path: string,
  token: string,
  headers: Record<string, string> = {},
  from = "127.0.0.1",
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        path,
        localAddress: from,
        agent: false,
        headers: { authorization: `Bearer ${token}`, ...headers },
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
    req.end();
  });
}

const createEvent = (subject: string) =>
  grpcMessage(
    toBinary(
      CreateEventRequestSchema,
      create(CreateEventRequestSchema, { source: "th", type: "t", subject }),
    ),
  );

/** CreateEvent over plain gRPC: the unary fast path. */
const fastPath = (server: RunningServer, token: string, headers: Record<string, string> = {}) =>
  rawGrpcCall(`http://127.0.0.1:${server.grpcPort}`, "/grpc.EventsDB/CreateEvent", createEvent("th/1"), {
    authorization: `Bearer ${token}`,
    ...headers,
  });

const KINDS: ConnectKind[] = ["connect (HTTP/1.1)", "grpc-web (HTTP/1.1)", "grpc (HTTP/2)"];

describe("the failed-authentication throttle", () => {
  it("after 30 failures refuses the valid token on REST, SSE, Connect, gRPC-Web and gRPC, until the minute has passed on the monotonic clock", async () => {
    let now = 0;
    const server = await start({}, () => now);
    const port = server.restPort;
    const url = `http://127.0.0.1:${port}`;
    const urls = { url, grpcUrl: `http://127.0.0.1:${server.grpcPort}` };
    const peers = KINDS.map((kind) => connectPeer(kind, urls));
    closers.push(...peers);
    const headers = (token: string) => ({ authorization: `Bearer ${token}` });

    // 30 wrong tokens, over three transports; each counts against the address.
    for (let i = 0; i < AUTH_FAILURES_PER_MINUTE; i++) {
      const guess = `guess-${i}`;
      if (i % 3 === 0) expect((await get(port, "/subjects", guess)).status).toBe(401);
      if (i % 3 === 1) {
        const answer = await fastPath(server, guess);
        expect(answer.grpcStatus).toBe(String(grpc.status.UNAUTHENTICATED));
      }
      if (i % 3 === 2) {
        const error = await (peers[0] as (typeof peers)[0]).client
          .listSubjects({}, { headers: headers(guess) })
          .then(
            () => undefined,
            (e: unknown) => ConnectError.from(e),
          );
        expect(error?.code).toBe(Code.Unauthenticated);
      }
    }

    // The right token, everywhere: refused, in each protocol's shape.
    now = 10_000;
    const rest = await get(port, "/subjects", TOKEN);
    expect(rest.status).toBe(429);
    expect(JSON.parse(rest.body).error.code).toBe("too_many_requests");
    expect(Number(rest.headers["retry-after"])).toBe(53); // the real remaining time (63 s − 10 s)
    const sse = await openStream(`${url}/events/stream`, headers(TOKEN));
    sse.close();
    expect(sse.response.status).toBe(429);
    const signIn = await fetch(`${url}/auth/session`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: TOKEN }),
    });
    expect(signIn.status).toBe(429);
    for (const [i, peer] of peers.entries()) {
      const error = await peer.client.listSubjects({}, { headers: headers(TOKEN) }).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(error?.code, KINDS[i]).toBe(Code.ResourceExhausted);
    }
    const grpcFast = await fastPath(server, TOKEN);
    expect(grpcFast.grpcStatus).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
    expect(grpcFast.fields["grpc-retry-pushback-ms"]).toBe("53000");
    // Another address is not affected.
    expect((await get(port, "/subjects", TOKEN, {}, "127.0.0.2")).status).toBe(200);
    expect(await server.eventLog.repository.lastId()).toBe(0);
    const metrics = await scrapeMetrics(url);
    expect(metrics.value("eventsdb_requests_refused_total", { reason: "failed_authentications" })).toBe(7);

    // The wall clock steps back an hour; the minute passes on the monotonic clock: served again.
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(Date.now() - 3_600_000);
    now = 62_999;
    expect((await get(port, "/subjects", TOKEN)).status).toBe(429);
    now = 63_000;
    expect((await get(port, "/subjects", TOKEN)).status).toBe(200);
    expect((await fastPath(server, TOKEN)).grpcStatus).toBe("0");
    for (const peer of peers)
      expect((await peer.client.listSubjects({}, { headers: headers(TOKEN) })).subjects).toEqual(["th/1"]);
  });

  it("with --trust-proxy throttles two clients behind one proxy apart, on REST and the gRPC fast path", async () => {
    const server = await start({ "trust-proxy": "127.0.0.1" }, () => 0);
    const port = server.restPort;
    const behind = (client: string) => ({ "x-forwarded-for": client });
    for (let i = 0; i < AUTH_FAILURES_PER_MINUTE; i++) {
      if (i % 2 === 0)
        expect((await get(port, "/subjects", "wrong", behind("203.0.113.1"))).status).toBe(401);
      else {
        expect((await fastPath(server, "wrong", behind("203.0.113.1"))).grpcStatus).toBe(
          String(grpc.status.UNAUTHENTICATED),
        );
      }
    }
    expect((await get(port, "/subjects", TOKEN, behind("203.0.113.1"))).status).toBe(429);
    expect((await fastPath(server, TOKEN, behind("203.0.113.1"))).grpcStatus).toBe(
      String(grpc.status.RESOURCE_EXHAUSTED),
    );
    // The other client behind the same proxy, and the proxy itself, are served.
    expect((await get(port, "/subjects", TOKEN, behind("203.0.113.2"))).status).toBe(200);
    expect((await fastPath(server, TOKEN, behind("203.0.113.2"))).grpcStatus).toBe("0");
    expect((await get(port, "/subjects", TOKEN)).status).toBe(200);
  });

  it("without --trust-proxy ignores X-Forwarded-For: a client cannot escape by naming other addresses", async () => {
    const server = await start({}, () => 0);
    for (let i = 0; i < AUTH_FAILURES_PER_MINUTE; i++) {
      const spoof = { "x-forwarded-for": `198.51.100.${i}` };
      if (i % 2 === 0) expect((await get(server.restPort, "/subjects", "wrong", spoof)).status).toBe(401);
      else
        expect((await fastPath(server, "wrong", spoof)).grpcStatus).toBe(String(grpc.status.UNAUTHENTICATED));
    }
    const fresh = { "x-forwarded-for": "198.51.100.200" };
    expect((await get(server.restPort, "/subjects", TOKEN, fresh)).status).toBe(429);
    expect((await fastPath(server, TOKEN, fresh)).grpcStatus).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
  });
});
