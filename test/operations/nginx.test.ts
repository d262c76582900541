import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.js";
import { DIALECTS } from "../support/dialects.js";
import { connectPeer, GrpcJsClient } from "../support/grpc.js";
import { freePort } from "../support/ports.js";
import { within } from "../support/process.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { openStream, waitUntil } from "../support/sse.js";
import { systemTool } from "../support/tools.js";

/**
 * Debian's nginx (the system binary, no root: no `user` directive, everything in a temp dir) in
 * front of a real server, configured by examples/nginx/eventsdb.conf itself — only its ports are
 * substituted — so the example documented in the README is the one that is tested.
 */

const EXAMPLE = fileURLToPath(new URL("../../examples/nginx/eventsdb.conf", import.meta.url));
/**
 * Requests a client address may make in a minute (--rate-limit): shows which address the server
 * saw. Above what the other tests send from 127.0.0.1 together.
 */
const RATE_LIMIT = 60;

/** `text` with `literal` replaced by `value`; it must occur exactly once, or the example changed. */
function substitute(text: string, literal: string, value: string): string {
  const parts = text.split(literal);
  if (parts.length !== 2)
    throw new Error(`expected "${literal}" once in ${EXAMPLE}, found ${parts.length - 1}`);
  return parts.join(value);
}

interface Ports {
  readonly rest: number;
  readonly grpc: number;
  readonly http: number;
  readonly h2c: number;
}

/** examples/nginx/eventsdb.conf with the test's ports instead of the documented defaults. */
function exampleConfig(ports: Ports): string {
  let text = readFileSync(EXAMPLE, "utf8");
  text = substitute(text, "server 127.0.0.1:8080;", `server 127.0.0.1:${ports.rest};`);
  text = substitute(text, "server 127.0.0.1:50051;", `server 127.0.0.1:${ports.grpc};`);
  text = substitute(text, "listen 80;", `listen 127.0.0.1:${ports.http};`);
  text = substitute(text, "listen 50052 http2;", `listen 127.0.0.1:${ports.h2c} http2;`);
  return text;
}

/**
 * The main configuration around the example: files in `dir`, one worker, and gzip on for
 * text/event-stream as a site-wide setting might have it, so the example must turn it off itself.
 */
function mainConfig(dir: string): string {
  return `
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 256; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  gzip on;
  gzip_min_length 1;
  gzip_types text/event-stream application/json;
  include ${dir}/eventsdb.conf;
}
`;
}

/** Waits until `port` accepts HTTP (any status), at most 10 s. */
async function waitForHttp(port: number, exited: () => string | undefined): Promise<void> {
  await waitUntil(
    async () => {
      const reason = exited();
      if (reason !== undefined) throw new Error(reason);
      try {
        await fetch(`http://127.0.0.1:${port}/healthz`);
        return true;
      } catch {
        return false;
      }
    },
    "nginx to listen",
    10_000,
  );
}

/** GET through nginx from a chosen loopback source address (127.0.0.0/8 are all local). */
function getFrom(localAddress: string, port: number, urlPath: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = http.get(
      { host: "127.0.0.1", port, path: urlPath, localAddress, agent: false },
      (response) => {
        response.resume();
        response.on("end", () => resolve(response.statusCode ?? 0));
      },
    );
    request.setTimeout(10_000, () =>
      request.destroy(new Error(`GET ${urlPath} from ${localAddress} timed out`)),
    );
    request.on("error", reject);
  });
}

describe("behind nginx (examples/nginx/eventsdb.conf)", () => {
  let t: TestServer;
  let nginx: ChildProcess;
  let dir: string;
  let ports: Ports;
  let base: string;
  let stderr = "";
  let exit: string | undefined;

  beforeAll(async () => {
    t = await startTestServer(await (DIALECTS[0] as (typeof DIALECTS)[number]).url(), {
      "heartbeat-interval": "1",
      "trust-proxy": "127.0.0.1",
      "rate-limit": String(RATE_LIMIT),
    });
    ports = {
      rest: t.server.restPort,
      grpc: t.server.grpcPort,
      http: await freePort(),
      h2c: await freePort(),
    };
    base = `http://127.0.0.1:${ports.http}`;
    dir = mkdtempSync(path.join(tmpdir(), "eventsdb-nginx-"));
    // Started as root (a CI container), nginx runs its worker as `nobody`, which must reach the dir.
    chmodSync(dir, 0o755);
    writeFileSync(path.join(dir, "eventsdb.conf"), exampleConfig(ports));
    writeFileSync(path.join(dir, "nginx.conf"), mainConfig(dir));
    nginx = spawn(
      systemTool("nginx", "nginx"),
      ["-p", dir, "-c", path.join(dir, "nginx.conf"), "-g", "daemon off;"],
      {
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    nginx.stderr?.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    nginx.on("error", (error) => {
      exit = `nginx did not start: ${error.message}`;
    });
    nginx.on("exit", (code, signal) => {
      exit ??= `nginx exited (${code ?? signal}): ${stderr}`;
    });
    await waitForHttp(ports.http, () => exit);
  });

  afterAll(async () => {
    if (nginx?.pid !== undefined && nginx.exitCode === null && nginx.signalCode === null) {
      const exited = new Promise((resolve) => nginx.once("exit", resolve));
      process.kill(nginx.pid, "SIGTERM");
      await within(exited, 10_000, "nginx to stop after SIGTERM").catch(() => {
        if (nginx.pid !== undefined) process.kill(nginx.pid, "SIGKILL");
      });
    }
    await t?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("passes a POST and a GET (REST)", async () => {
    const posted = await fetch(`${base}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ source: "nginx-test", type: "rest", subject: "nginx/rest", data: "aGk=" }),
    });
    expect(posted.status).toBe(200);
    const { id } = (await posted.json()) as { id: number };
    const got = await fetch(`${base}/events/get?id=${id}`);
    expect(got.status).toBe(200);
    expect(await got.json()).toMatchObject({ id, subject: "nginx/rest", type: "rest", data: "aGk=" });
  });

  it("keeps a quiet stream open: proxy_read_timeout is above the default --heartbeat-interval", () => {
    // The wait itself (a minute of silence) is too long for a test; the numbers are checked.
    const stream = /location = \/events\/stream \{([^}]*)\}/.exec(readFileSync(EXAMPLE, "utf8"))?.[1] ?? "";
    const timeout = /proxy_read_timeout (\d+)s;/.exec(stream)?.[1];
    expect(timeout).toBeDefined();
    const heartbeat = loadConfig({}, { "database-url": "sqlite::memory:" }).streams.heartbeatIntervalSeconds;
    expect(Number(timeout)).toBeGreaterThanOrEqual(2 * heartbeat);
  });

  it("streams SSE unbuffered and uncompressed: a live event arrives at once, heartbeats pass", async () => {
    const stream = await openStream(`${base}/events/stream?subject=nginx/sse`, { "accept-encoding": "gzip" });
    try {
      expect(stream.response.status).toBe(200);
      expect(stream.response.headers.get("content-type")).toMatch(/^text\/event-stream/);
      // gzip is on for text/event-stream in the main config: the example's stream location turns it off.
      expect(stream.response.headers.get("content-encoding")).toBeNull();
      await waitUntil(
        () => stream.parser.comments.includes("heartbeat"),
        "a heartbeat through nginx",
        10_000,
      );
      const posted = await fetch(`${base}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ source: "nginx-test", type: "sse", subject: "nginx/sse", data: "c3Nl" }),
      });
      const { id } = (await posted.json()) as { id: number };
      // One small frame: a buffering or compressing proxy would hold it back (until its buffer
      // fills or the stream ends); unbuffered, it comes through while the stream stays open.
      await waitUntil(() => stream.parser.ids().includes(id), "the live event through nginx", 10_000);
      const heartbeats = stream.parser.comments.filter((c) => c === "heartbeat").length;
      await waitUntil(
        () => stream.parser.comments.filter((c) => c === "heartbeat").length > heartbeats,
        "another heartbeat after the event",
        10_000,
      );
    } finally {
      stream.close();
    }
  });

  it("passes gRPC through grpc_pass: a unary call and a live stream", async () => {
    const client = new GrpcJsClient(ports.h2c, true);
    try {
      const created = await client.unary("CreateEvent", {
        source: "nginx-test",
        type: "grpc",
        subject: "nginx/grpc",
        data: Buffer.from("grpc"),
      });
      const event = await client.unary("GetEventByID", { id: created.id });
      expect(event).toMatchObject({ id: created.id, subject: "nginx/grpc", type: "grpc" });
      expect(event.data.toString()).toBe("grpc");

      const stream = client.stream({ subject: "nginx/grpc" });
      await waitUntil(
        () => stream.ids().includes(Number(created.id)),
        "the stored event on the gRPC stream",
        10_000,
      );
      const live = await client.unary("CreateEvent", {
        source: "nginx-test",
        type: "grpc",
        subject: "nginx/grpc",
        data: Buffer.from("live"),
      });
      await waitUntil(
        () => stream.ids().includes(Number(live.id)),
        "the live event on the gRPC stream",
        10_000,
      );
      expect(stream.error).toBeUndefined();
    } finally {
      client.close();
    }
  });

  it.each(["grpc-web (HTTP/1.1)", "connect (HTTP/1.1)", "grpc (HTTP/2)"] as const)(
    "passes %s (connect-node) through its listener",
    async (kind) => {
      // gRPC-Web and Connect are plain HTTP/1.1 (proxy_pass); gRPC goes to the h2c listener.
      const peer = connectPeer(kind, { url: base, grpcUrl: `http://127.0.0.1:${ports.h2c}` });
      try {
        const { id } = await peer.client.createEvent({
          source: "nginx-test",
          type: "connect",
          subject: "nginx/connect",
        });
        const event = await peer.client.getEventByID({ id });
        expect(event.subject).toBe("nginx/connect");
      } finally {
        peer.close();
      }
    },
  );

  it("serves the console (/ui redirects to /ui/, its script loads)", async () => {
    const redirect = await fetch(`${base}/ui`, { redirect: "manual" });
    expect(redirect.status).toBe(302);
    const page = await fetch(`${base}/ui`);
    expect(page.url).toBe(`${base}/ui/`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toMatch(/^text\/html/);
    expect(await page.text()).toContain("<title>eventsdb console</title>");
    const script = await fetch(`${base}/ui/console.js`);
    expect(script.status).toBe(200);
    expect(script.headers.get("content-type")).toMatch(/javascript/);
  });

  it("hands the client address to the server (X-Forwarded-For under --trust-proxy)", async () => {
    // The rate limit of an open server counts per client address. Behind nginx, every request
    // comes from nginx's address: only if the server takes the client from X-Forwarded-For do
    // two clients get a budget each.
    const statuses: number[] = [];
    for (let i = 0; i <= RATE_LIMIT; i++) statuses.push(await getFrom("127.0.0.2", ports.http, "/subjects"));
    expect(statuses.slice(0, RATE_LIMIT).every((s) => s === 200)).toBe(true);
    expect(statuses[RATE_LIMIT]).toBe(429);
    expect(await getFrom("127.0.0.3", ports.http, "/subjects")).toBe(200);
    // A client cannot choose its address: nginx replaces the header instead of appending to it.
    const spoofed = await fetch(`${base}/subjects`, { headers: { "x-forwarded-for": "127.0.0.2" } });
    expect(spoofed.status).toBe(200);
  });
});
