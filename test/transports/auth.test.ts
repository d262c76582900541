import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tokenDigest } from "../../src/auth/tokens.js";
import { loadConfig } from "../../src/config.js";
import { EventsDB } from "../../src/gen/grpc/eventsdb_pb.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { GrpcJsClient } from "../support/grpc.js";
import { openStream, waitUntil } from "../support/sse.js";

const ADMIN = "admin-token-0123456789";
const EU_READER = "eu-reader-token-abcdef";
const ORDERS_WRITER = "orders-writer-token-xyz";
const EXPIRED = "expired-token-000";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-auth-"));
const hex = (token: string) => tokenDigest(token).toString("hex");
const authFile = path.join(dir, "tokens.yaml");
fs.writeFileSync(
  authFile,
  `tokens:
  - name: eu-reader
    sha256: ${hex(EU_READER)}
    read: [orders/eu]
  - name: orders-writer
    sha256: ${hex(ORDERS_WRITER)}
    read: [orders]
    write: [orders]
  - name: expired
    sha256: ${hex(EXPIRED)}
    read: ["*"]
    write: ["*"]
    expires: 2001-01-01T00:00:00Z
`,
);

let server: RunningServer;
let url: string;
let grpcUrl: string;
const logLines: string[] = [];

beforeAll(async () => {
  const config = loadConfig(
    { AUTH_TOKEN: ADMIN },
    {
      "database-url": `sqlite:${path.join(dir, "events.db")}`,
      "rest-port": "0",
      "grpc-port": "0",
      host: "127.0.0.1",
      "auth-file": authFile,
      "allow-query-token": "true",
      "protect-metrics": "true",
    },
  );
  const stream = new Writable({
    write(chunk, _encoding, done) {
      logLines.push(...String(chunk).split("\n").filter(Boolean));
      done();
    },
  });
  server = await startServer(config, {
    logger: {
      level: "info",
      stream,
      redact: ["req.headers.authorization", "req.headers.cookie", 'res.headers["set-cookie"]'],
    },
    defaultMetrics: false,
  });
  url = `http://127.0.0.1:${server.restPort}`;
  grpcUrl = `http://127.0.0.1:${server.grpcPort}`;
});

afterAll(async () => {
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const post = (subject: string, token?: string) =>
  fetch(`${url}/events`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ source: "auth", type: "t", subject }),
  });

describe("authentication and scopes", () => {
  it("answers 401 with WWW-Authenticate without a valid token, and keeps health open", async () => {
    for (const token of [undefined, "wrong", EXPIRED]) {
      const res = await post("orders/eu/1", token);
      expect(res.status, String(token)).toBe(401);
      expect(res.headers.get("www-authenticate")).toBe('Bearer realm="eventsdb"');
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("unauthenticated");
    }
    const basic = await fetch(`${url}/subjects`, { headers: { authorization: `Basic ${ADMIN}` } });
    expect(basic.status).toBe(401);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    expect((await fetch(`${url}/metrics`)).status).toBe(401); // --protect-metrics
    expect((await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })).status).toBe(
      200,
    );
  });

  it("lets AUTH_TOKEN do everything and a scoped token only its subjects (403 otherwise)", async () => {
    expect((await post("anything/1", ADMIN)).status).toBe(200);
    expect((await post("orders/eu/1", ORDERS_WRITER)).status).toBe(200);
    expect((await post("orders/us/1", ORDERS_WRITER)).status).toBe(200);
    const denied = await post("invoices/1", ORDERS_WRITER);
    expect(denied.status).toBe(403);
    expect(((await denied.json()) as { error: { code: string } }).error.code).toBe("permission_denied");
    expect((await post("orders/eu/2", EU_READER)).status).toBe(403); // read-only token

    const read = (path: string, token: string) =>
      fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}` } });
    // A recursive read above the scope is cut to the scope.
    const cut = (await (await read("/events?subject=orders&recursive=true", EU_READER)).json()) as {
      events: { subject: string }[];
    };
    expect(cut.events.map((e) => e.subject)).toEqual(["orders/eu/1"]);
    expect((await read("/events?subject=orders", EU_READER)).status).toBe(403);
    expect((await read("/events?subject=invoices&recursive=true", EU_READER)).status).toBe(403);
    expect(await (await read("/subjects", EU_READER)).json()).toEqual(["orders/eu/1"]);
    const [first] = (
      (await (await read("/events?subject=anything/1", ADMIN)).json()) as { events: { id: number }[] }
    ).events;
    // Unreadable is answered like missing (see test/transports/read-scopes.test.ts).
    expect((await read(`/events/${first?.id}`, EU_READER)).status).toBe(404);
    const del = await fetch(`${url}/events?subject=orders/us`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${EU_READER}` },
    });
    expect(del.status).toBe(403);
  });

  it("gives browsers a session cookie for EventSource, and signs them out", async () => {
    const bad = await fetch(`${url}/auth/session`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: "nope" }),
    });
    expect(bad.status).toBe(401);
    const res = await fetch(`${url}/auth/session`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: EU_READER }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ name: "eu-reader", read: ["orders/eu"] });
    const cookie = res.headers.get("set-cookie") ?? "";
    expect(cookie).toMatch(/^eventsdb_session=[\w-]{40,};/);
    expect(cookie).toContain("HttpOnly");
    expect(cookie).toContain("SameSite=Strict");
    expect(cookie).not.toContain("Secure"); // no TLS here
    const session = cookie.split(";")[0] as string;

    const stream = await openStream(`${url}/events/stream?subject=orders&recursive=true`, {
      cookie: session,
    });
    try {
      expect(stream.response.status).toBe(200);
      await post("orders/us/2", ADMIN);
      await post("orders/eu/3", ADMIN);
      await waitUntil(
        () => stream.parser.events.some((e) => JSON.parse(e.data).subject === "orders/eu/3"),
        "eu event",
      );
      expect(stream.parser.events.map((e) => JSON.parse(e.data).subject)).toEqual([
        "orders/eu/1",
        "orders/eu/3",
      ]);
    } finally {
      stream.close();
    }
    // Signing out changes state: the console's header and origin are required with the cookie.
    const out = await fetch(`${url}/auth/session`, {
      method: "DELETE",
      headers: { cookie: session, origin: url, "x-eventsdb-console": "1" },
    });
    expect(out.status).toBe(204);
    expect((await fetch(`${url}/subjects`, { headers: { cookie: session } })).status).toBe(401);
  });

  it("accepts ?access_token= on the stream route only, when enabled", async () => {
    const stream = await openStream(
      `${url}/events/stream?subject=orders/eu&recursive=true&access_token=${EU_READER}`,
    );
    stream.close();
    expect(stream.response.status).toBe(200);
    expect((await fetch(`${url}/subjects?access_token=${EU_READER}`)).status).toBe(401);
  });

  it("authenticates gRPC: Bearer or bare token in metadata, UNAUTHENTICATED and PERMISSION_DENIED", async () => {
    const client = createClient(EventsDB, createGrpcTransport({ baseUrl: grpcUrl }));
    const call = async (headers: Record<string, string>, subject: string) => {
      try {
        await client.createEvent({ source: "g", type: "t", subject }, { headers });
        return Code[0];
      } catch (error) {
        return Code[ConnectError.from(error).code];
      }
    };
    expect(await call({}, "orders/1")).toBe("Unauthenticated");
    expect(await call({ authorization: `Bearer ${ORDERS_WRITER}` }, "orders/g/1")).toBe(Code[0]);
    expect(await call({ authorization: ORDERS_WRITER }, "orders/g/2")).toBe(Code[0]); // (compat) bare token
    expect(await call({ authorization: `Bearer ${ORDERS_WRITER}` }, "invoices/1")).toBe("PermissionDenied");

    // An independent peer: grpc-js with the bare token in metadata, as Events DB clients send it.
    const peer = new GrpcJsClient(server.grpcPort);
    try {
      const metadata = new grpc.Metadata();
      metadata.set("authorization", ADMIN);
      const method = peer.client.ListSubjects as unknown as (
        request: object,
        metadata: grpc.Metadata,
        callback: (error: grpc.ServiceError | null, reply?: { subjects: string[] }) => void,
      ) => void;
      const reply = await new Promise<{ subjects: string[] }>((resolve, reject) =>
        method.call(peer.client, { prefix: "orders/g" }, metadata, (error, r) =>
          error ? reject(error) : resolve(r ?? { subjects: [] }),
        ),
      );
      expect(reply.subjects).toEqual(["orders/g/1", "orders/g/2"]);
      const unauth = await peer.failure("ListSubjects", { prefix: "" });
      expect(unauth.code).toBe(grpc.status.UNAUTHENTICATED);
    } finally {
      peer.close();
    }
  });

  it("never writes a token, cookie or access_token into the log", async () => {
    const all = logLines.join("\n");
    expect(logLines.some((l) => l.includes('"msg":"request"'))).toBe(true);
    // gRPC appends that bypass Fastify (the unary short path) are logged the same way.
    const grpcLines = logLines.filter((l) => l.includes('"route":"/grpc.EventsDB/CreateEvent"'));
    expect(
      grpcLines.some((l) => l.includes('"grpcStatus":0') && l.includes('"caller":"orders-writer"')),
    ).toBe(true);
    for (const secret of [ADMIN, EU_READER, ORDERS_WRITER, "eventsdb_session="]) {
      expect(all.includes(secret), secret).toBe(false);
    }
  });
});

describe("token guessing", () => {
  it("answers 429 after 30 failed authentications from one address in a minute", async () => {
    const config = loadConfig(
      { AUTH_TOKEN: ADMIN },
      { "database-url": "sqlite::memory:", "rest-port": "0", "grpc-port": "0", host: "127.0.0.1" },
    );
    const guarded = await startServer(config, { logger: false, defaultMetrics: false });
    try {
      const base = `http://127.0.0.1:${guarded.restPort}`;
      const guess = (token: string) =>
        fetch(`${base}/subjects`, { headers: { authorization: `Bearer ${token}` } });
      const statuses: number[] = [];
      for (let i = 0; i < 30; i++) statuses.push((await guess(`guess-${i}`)).status);
      expect(statuses).toEqual(Array(30).fill(401));
      const blocked = await guess(ADMIN);
      expect(blocked.status).toBe(429);
      // The real remaining time: the failures leave the one-minute window within 63 s.
      const retryAfter = Number(blocked.headers.get("retry-after"));
      expect(retryAfter).toBeGreaterThanOrEqual(58);
      expect(retryAfter).toBeLessThanOrEqual(63);
      expect(((await blocked.json()) as { error: { code: string } }).error.code).toBe("too_many_requests");
      expect((await fetch(`${base}/healthz`)).status).toBe(200); // open routes stay open
    } finally {
      await guarded.close();
    }
  });
});
