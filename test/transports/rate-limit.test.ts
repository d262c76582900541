import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { connectPeer } from "../support/grpc.js";

/**
 * `--rate-limit N`: N requests per minute per caller, the caller being the token's name, or the
 * client IP without a token. The N+1st answers 429 with the JSON error body and Retry-After.
 * Clients on other loopback addresses (127.0.0.2, …) play other IPs.
 */

const TOKEN = "rate-limit-token-0123456789";
const LIMIT = 5;

const servers: RunningServer[] = [];
const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

async function start(env: Record<string, string>): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-rate-"));
  dirs.push(dir);
  const config = loadConfig(env, {
    "database-url": `sqlite:${path.join(dir, "events.db")}`,
    "rest-port": "0",
    "grpc-port": "0",
    host: "127.0.0.1",
    "rate-limit": String(LIMIT),
  });
  const server = await startServer(config, { logger: false, defaultMetrics: false });
  servers.push(server);
  return server.restPort;
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

function expectTooManyRequests(reply: Reply): void {
  expect(reply.status, reply.body).toBe(429);
  expect(reply.headers["content-type"]).toMatch(/^application\/json/);
  const body = JSON.parse(reply.body) as { error: { code: string; message: string } };
  expect(body.error.code).toBe("too_many_requests");
  expect(body.error.message).toContain(`${LIMIT} requests per minute`);
  const retryAfter = Number(reply.headers["retry-after"]);
  expect(Number.isInteger(retryAfter), `Retry-After ${reply.headers["retry-after"]}`).toBe(true);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(60);
}

describe(`--rate-limit ${LIMIT}`, () => {
  describe("with AUTH_TOKEN: limited per token name", () => {
    it("lets 5 requests of the token through and answers the 6th 429, JSON error and Retry-After", async () => {
      const port = await start({ AUTH_TOKEN: TOKEN });
      const subjects = () => request(port, { path: "/subjects", token: TOKEN });
      expect(await statuses(LIMIT, subjects)).toEqual([200, 200, 200, 200, 200]);
      const sixth = await subjects();
      expectTooManyRequests(sixth);
      // Every route counts against the same token: a write is refused too, and stores nothing.
      const post = await request(port, {
        path: "/events",
        method: "POST",
        token: TOKEN,
        type: "application/json",
        body: JSON.stringify({ source: "rl", type: "t", subject: "rl/1" }),
      });
      expectTooManyRequests(post);
      expect(await (servers[0] as RunningServer).store.repository.lastId()).toBe(0);
    });

    it("counts the token as one caller from every address", async () => {
      const port = await start({ AUTH_TOKEN: TOKEN });
      const from = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"];
      const replies: number[] = [];
      for (const address of from) {
        replies.push((await request(port, { path: "/subjects", token: TOKEN, from: address })).status);
      }
      expect(replies).toEqual([200, 200, 200, 200, 200, 429]);
    });

    it("does not count refused credentials: 401s never turn into 429 (no brake on token guessing)", async () => {
      const port = await start({ AUTH_TOKEN: TOKEN });
      // Authentication runs in onRequest and answers 401 before the limiter's preHandler hook.
      const wrong = await statuses(LIMIT * 3, () => request(port, { path: "/subjects", token: "guess" }));
      expect(wrong).toEqual(Array(LIMIT * 3).fill(401));
      // …and they cost the address nothing: the real token still has its whole budget.
      expect(await statuses(LIMIT, () => request(port, { path: "/subjects", token: TOKEN }))).toEqual(
        Array(LIMIT).fill(200),
      );
    });

    it("limits the open /healthz by IP, apart from the token's budget", async () => {
      const port = await start({ AUTH_TOKEN: TOKEN });
      // The token's budget is spent…
      expect(await statuses(LIMIT, () => request(port, { path: "/subjects", token: TOKEN }))).toEqual(
        Array(LIMIT).fill(200),
      );
      expect((await request(port, { path: "/subjects", token: TOKEN })).status).toBe(429);
      // …yet /healthz still answers: open routes skip authentication, so even with the token the
      // caller is anonymous and counted by IP.
      expect(await statuses(LIMIT, () => request(port, { path: "/healthz", token: TOKEN }))).toEqual(
        Array(LIMIT).fill(200),
      );
      // /healthz is limited too: the 6th probe from one address is refused.
      expectTooManyRequests(await request(port, { path: "/healthz" }));
      expectTooManyRequests(await request(port, { path: "/readyz" }));
      expect((await request(port, { path: "/healthz", from: "127.0.0.2" })).status).toBe(200);
    });
  });

  describe("open server (no token): limited per IP", () => {
    it("lets 5 requests of an address through, answers the 6th 429, and keeps other addresses apart", async () => {
      const port = await start({});
      const from = (address: string) => () => request(port, { path: "/events?limit=1", from: address });
      expect(await statuses(LIMIT, from("127.0.0.1"))).toEqual(Array(LIMIT).fill(200));
      expectTooManyRequests(await from("127.0.0.1")());
      expect(await statuses(LIMIT, from("127.0.0.2"))).toEqual(Array(LIMIT).fill(200));
      expectTooManyRequests(await from("127.0.0.2")());
    });

    it("counts every route of an address together, /healthz and /metrics included, but not unknown routes", async () => {
      const port = await start({});
      const replies: number[] = [];
      for (const p of ["/healthz", "/metrics", "/subjects", "/events/get?id=1", "/readyz"]) {
        replies.push((await request(port, { path: p })).status);
      }
      expect(replies).toEqual([200, 200, 200, 404, 200]); // a 404 of a known route counts too
      expectTooManyRequests(await request(port, { path: "/healthz" }));
      expectTooManyRequests(await request(port, { path: "/metrics" }));
      // Unknown routes end in the not-found handler, which the limiter does not hook: never 429.
      expect(await statuses(10, () => request(port, { path: "/nope" }))).toEqual(Array(10).fill(404));
    });

    it("answers Connect calls over the limit with HTTP 429 (a Connect client reads unavailable)", async () => {
      const port = await start({});
      const call = () =>
        request(port, {
          path: "/grpc.EventsDB/ListSubjects",
          method: "POST",
          type: "application/json",
          body: "{}",
        });
      expect(await statuses(LIMIT, call)).toEqual(Array(LIMIT).fill(200));
      const over = await call();
      expect(over.status).toBe(429);
      expect(over.headers["retry-after"]).toBeDefined();
      // A Connect error body; a Connect client reads its code, a gRPC client maps HTTP 429 to
      // UNAVAILABLE (the gRPC spec's HTTP-to-gRPC table), which invites the retry it should make.
      expect(JSON.parse(over.body)).toMatchObject({ code: "resource_exhausted" });
      const urls = { url: `http://127.0.0.1:${port}`, grpcUrl: `http://127.0.0.1:${port}` };
      for (const kind of ["connect (HTTP/1.1)", "grpc (HTTP/2)"] as const) {
        const peer = connectPeer(kind, urls);
        try {
          const error = await peer.client.listSubjects({}).then(
            () => undefined,
            (e: unknown) => ConnectError.from(e),
          );
          expect(error?.code, kind).toBe(
            kind.startsWith("connect") ? Code.ResourceExhausted : Code.Unavailable,
          );
        } finally {
          peer.close();
        }
      }
    });
  });
});
